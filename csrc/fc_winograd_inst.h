/* The Winograd kernels F(4x4, 3x3), F(4x4, 2x2) and F(7x7, 2x2), float and
 * double, of the instruction set named by the token FC_ISA (generic, avx2,
 * avx512): included once at the end of that set's micro-kernel file, so that
 * the transforms are compiled with its flags. Functions are
 * fc_<name><m><r>_<isa>_<s|d>: 43, 42 and 72. */
#define FC_WI_CAT(a, b, c) a##b##c
#define FC_WI_NAME(name, isa, t) FC_WI_CAT(fc_##name##_, isa, _##t)

#define FN(name) FC_WI_NAME(name, FC_ISA, s)
#define T float
#define GEMM fc_gemm_s
#define GEMM_GATHERED fc_gemm_gathered_s
#define GEMM_WS fc_gemm_ws_s
#define GEMM_NR fc_gemm_nr_s
#define GEMM_MR fc_gemm_mr_s
#define GEMM_KCB fc_gemm_kcb_s
#define GEMM_PACKED_B_SIZE fc_gemm_packed_b_size_s
#define TRANSPOSE FC_WI_NAME(transpose, FC_ISA, s)
#define NHWC_ROWS fc_nhwc_rows_s
#define NHWC_PHASES fc_nhwc_phase_rows_s
#define WM 4
#define WR 3
#include "fc_winograd_impl.h"
#undef WR
#define WR 2
#include "fc_winograd_impl.h"
#undef WM
#define WM 7
#include "fc_winograd_impl.h"
#undef WR
#undef WM
#undef NHWC_ROWS
#undef NHWC_PHASES
#undef T
#undef FN
#undef GEMM
#undef GEMM_GATHERED
#undef GEMM_WS
#undef GEMM_NR
#undef GEMM_MR
#undef GEMM_KCB
#undef GEMM_PACKED_B_SIZE
#undef TRANSPOSE

#define FN(name) FC_WI_NAME(name, FC_ISA, d)
#define T double
#define GEMM fc_gemm_d
#define GEMM_GATHERED fc_gemm_gathered_d
#define GEMM_WS fc_gemm_ws_d
#define GEMM_NR fc_gemm_nr_d
#define GEMM_MR fc_gemm_mr_d
#define GEMM_KCB fc_gemm_kcb_d
#define GEMM_PACKED_B_SIZE fc_gemm_packed_b_size_d
#define TRANSPOSE FC_WI_NAME(transpose, FC_ISA, d)
#define NHWC_ROWS fc_nhwc_rows_d
#define NHWC_PHASES fc_nhwc_phase_rows_d
#define WM 4
#define WR 3
#include "fc_winograd_impl.h"
#undef WR
#define WR 2
#include "fc_winograd_impl.h"
#undef WM
#define WM 7
#include "fc_winograd_impl.h"
#undef WR
#undef WM
#undef NHWC_ROWS
#undef NHWC_PHASES
#undef T
#undef FN
#undef GEMM
#undef GEMM_GATHERED
#undef GEMM_WS
#undef GEMM_NR
#undef GEMM_MR
#undef GEMM_KCB
#undef GEMM_PACKED_B_SIZE
#undef TRANSPOSE

#undef FC_WI_NAME
#undef FC_WI_CAT
