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
#include "fc_pack_impl.h"
#undef T
#undef FN

#define T double
#define FN(name) name##_d
#include "fc_pack_impl.h"
#undef T
#undef FN
