/* Operand packing into micro-kernel panels (float and double). */
#include "fc_gemm.h"

fc_view fc_view_t(const fc_view *v)
{
    fc_view t = *v;
    if (v->kind == FC_VIEW_DENSE) {
        t.rs = v->cs;
        t.cs = v->rs;
    } else {
        t.trans = !v->trans;
    }
    return t;
}

#define T float
#define FN(name) name##_s
#define FC_TRANSPOSE fc_transpose_s
#include "fc_pack_impl.h"
#undef T
#undef FN
#undef FC_TRANSPOSE

#define T double
#define FN(name) name##_d
#define FC_TRANSPOSE fc_transpose_d
#include "fc_pack_impl.h"
#undef T
#undef FN
#undef FC_TRANSPOSE
