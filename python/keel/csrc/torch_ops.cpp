// keel's LayerNorm, RMSNorm and fused residual add + norm as PyTorch operators.
//
// Registered with the dispatcher (TORCH_LIBRARY), so that eager calls cost what a call of one of
// torch's own ops costs (no Python between the caller and keel), and torch.compile, torch.export
// and torch.func keep the ops in their graphs. Per op:
//   - a CPU kernel that calls keel (float32, bfloat16, float16 storage; anything else is refused
//     here: python/keel/torch.py sends other dtypes and devices to torch's op, and says so);
//   - an Autograd kernel that connects the outputs to a backward node of the op's own; the node
//     calls the op's backward operator (keel), and when that gradient needs a gradient of its own
//     (create_graph=True: torch.func.grad, double backward) it hands keel's result to a node that
//     differentiates the same backward written in torch's differentiable ops;
//   - fake (meta) kernels live in python/keel/torch.py (torch.library.register_fake).
//
// The shared object does not link libkeel: keel_torch_bind() hands it the entry points of the
// libkeel that `import keel` loaded (python/keel/_torch_ext.py), so both sides use one library.
// It holds one keel context of its own, created on first use, used by one call at a time.

#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/layer_norm.h>
#include <ATen/ops/rms_norm.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/library.h>

#include <pthread.h>

#include <array>
#include <functional>
#include <cstring>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <vector>

extern "C" {
#include "keel.h"
}

using at::Tensor;
using OptTensor = std::optional<Tensor>;
using torch::autograd::variable_list;

namespace {

// ---- the libkeel entry points and the context -------------------------------------------------

struct Api {
    decltype(&keel_ctx_create) ctx_create;
    decltype(&keel_ctx_destroy) ctx_destroy;
    decltype(&keel_ctx_set_threads) ctx_set_threads;
    decltype(&keel_last_error) last_error;
    decltype(&keel_layernorm_fwd) layernorm_fwd;
    decltype(&keel_layernorm_bwd) layernorm_bwd;
    decltype(&keel_rmsnorm_fwd) rmsnorm_fwd;
    decltype(&keel_rmsnorm_bwd) rmsnorm_bwd;
    decltype(&keel_add_layernorm_fwd) add_layernorm_fwd;
    decltype(&keel_add_rmsnorm_fwd) add_rmsnorm_fwd;
    decltype(&keel_add_layernorm_bwd) add_layernorm_bwd;
    decltype(&keel_add_rmsnorm_bwd) add_rmsnorm_bwd;
};
constexpr int kApiEntries = sizeof(Api) / sizeof(void *);

Api api;
bool bound = false;
keel_ctx *ctx = nullptr;
int ctx_threads = 0;  // what the next context is created with (<= 0: one thread per core)
std::mutex *ctx_mutex = new std::mutex;  // a pointer: a forked child gets a fresh one

void forget_context_in_child()
{
    // The parent's pool threads do not exist in a forked child: its context would hang. Leak it
    // (destroying would join those threads) and let the next call create one.
    ctx = nullptr;
    ctx_mutex = new std::mutex;
}

// Raises keel's error as the matching Python exception (ValueError for bad arguments).
[[noreturn]] void raise_status(keel_status st)
{
    std::string msg = api.last_error ? api.last_error() : "keel: error";
    if (st == KEEL_EINVAL || st == KEEL_ENULL || st == KEEL_EOVERFLOW)
        TORCH_CHECK_VALUE(false, msg);
    if (st == KEEL_EUNSUPPORTED)
        TORCH_CHECK_TYPE(false, msg);
    TORCH_CHECK(false, msg);
}

// Runs fn(ctx, args...) on the context, one call at a time; raises keel's error.
template <typename Fn, typename... Args> void call(Fn fn, Args... args)
{
    TORCH_CHECK(bound, "keel: the torch operators are not bound to libkeel (import keel.torch)");
    keel_status st;
    {
        std::lock_guard<std::mutex> lock(*ctx_mutex);
        if (!ctx) {
            st = api.ctx_create(&ctx, ctx_threads);
            if (st != KEEL_OK)
                raise_status(st);
        }
        st = fn(ctx, args...);
    }
    if (st != KEEL_OK)
        raise_status(st);
}

// ---- tensors as keel's rows ---------------------------------------------------------------------

float null_row[1];  // an address for empty tensors (keel never reads it: 0 rows)

keel_dtype keel_dtype_of(const Tensor &t, const char *who, const char *name)
{
    switch (t.scalar_type()) {
    case at::kFloat: return KEEL_F32;
    case at::kBFloat16: return KEEL_BF16;
    case at::kHalf: return KEEL_F16;
    default:
        TORCH_CHECK_TYPE(false, who, ": ", name, " has dtype ", t.scalar_type(),
                         "; keel computes float32, bfloat16 and float16 (keel.torch sends other dtypes to torch's op)");
    }
}

// A shape as Python writes a tuple: (8,), (2, 7).
std::string py_tuple(at::IntArrayRef dims)
{
    std::string s = "(";
    for (size_t i = 0; i < dims.size(); i++)
        s += (i ? ", " : "") + std::to_string(dims[i]);
    return s + (dims.size() == 1 ? ",)" : ")");
}

// rows x dim of a tensor normalized over its trailing dims (checked against normalized_shape).
struct Shape {
    std::vector<int64_t> lead;
    int64_t rows = 1, dim = 1;
    size_t k = 0;
};

Shape split(const Tensor &x, at::IntArrayRef dims, const char *who, const char *name = "x")
{
    Shape s;
    s.k = dims.size();
    auto sizes = x.sizes();
    bool fits = sizes.size() >= s.k && s.k > 0;
    for (size_t i = 0; fits && i < s.k; i++)
        fits = sizes[sizes.size() - s.k + i] == dims[i];
    TORCH_CHECK_VALUE(fits, who, ": normalized_shape ", py_tuple(dims), " does not match the trailing dimensions of ",
                      name, ".shape ", py_tuple(sizes));
    for (size_t i = 0; i + s.k < sizes.size(); i++) {
        s.lead.push_back(sizes[i]);
        s.rows *= sizes[i];
    }
    for (int64_t d : dims)
        s.dim *= d;
    return s;
}

// The row stride (elements) of t's rows when its trailing k dims are contiguous and its rows are
// evenly strided; -1 otherwise.
int64_t row_stride(const Tensor &t, size_t k, int64_t dim)
{
    auto sizes = t.sizes();
    auto strides = t.strides();
    size_t n = sizes.size();
    int64_t expect = 1;
    for (size_t i = n; i-- > n - k;) {
        if (sizes[i] != 1 && strides[i] != expect)
            return -1;
        expect *= sizes[i];
    }
    int64_t stride = -1;
    for (size_t i = n - k; i-- > 0;) {
        if (sizes[i] == 1)
            continue;
        if (stride < 0) {
            stride = strides[i];
            expect = strides[i] * sizes[i];
        } else if (strides[i] != expect) {
            return -1;
        } else {
            expect *= sizes[i];
        }
    }
    if (stride < 0)
        return dim;
    return stride >= dim ? stride : -1;
}

// A tensor's rows for keel: read in place when evenly strided and aligned, else a contiguous copy
// (held in `keep` through the call).
struct Rows {
    Tensor keep;
    keel_tensor kt;
};

Rows rows_of(const Tensor &t, const Shape &s, const char *who, const char *name)
{
    keel_dtype dt = keel_dtype_of(t, who, name);
    Tensor u = t;
    int64_t stride = reinterpret_cast<uintptr_t>(t.data_ptr()) % t.element_size() ? -1 : row_stride(t, s.k, s.dim);
    if (stride < 0) {
        u = t.contiguous();
        if (reinterpret_cast<uintptr_t>(u.data_ptr()) % u.element_size())
            u = t.clone(at::MemoryFormat::Contiguous);
        stride = s.dim;
    }
    void *p = u.numel() ? u.data_ptr() : static_cast<void *>(null_row);
    return {u, keel_tensor{p, dt, static_cast<size_t>(stride)}};
}

Rows rows_or_none(const OptTensor &t, const Shape &s, const char *who, const char *name)
{
    if (!t || !t->defined())
        return {Tensor(), keel_none()};
    return rows_of(*t, s, who, name);
}

// A new contiguous output of `sizes` and dtype, and its keel_tensor; absent when not wanted.
Rows output(bool wanted, at::IntArrayRef sizes, at::ScalarType dtype, const Shape &s)
{
    if (!wanted)
        return {at::empty({0}, at::TensorOptions().dtype(dtype)), keel_none()};
    Tensor t = at::empty(sizes, at::TensorOptions().dtype(dtype));
    void *p = t.numel() ? t.data_ptr() : static_cast<void *>(null_row);
    return {t, keel_tensor{p, keel_dtype_of(t, "keel", "output"), static_cast<size_t>(s.dim)}};
}

// A per-feature vector (weight, bias, branch_scale, skip_bias) as float32 contiguous, or undefined.
Tensor param(const OptTensor &p, at::IntArrayRef dims, const char *who, const char *name)
{
    if (!p || !p->defined())
        return Tensor();
    TORCH_CHECK_VALUE(p->sizes() == dims, who, ": ", name, ".shape ", py_tuple(p->sizes()), " != normalized_shape ",
                      py_tuple(dims));
    TORCH_CHECK_VALUE(p->device().is_cpu(), who, ": ", name, " is on ", p->device(), ", x on the CPU");
    return p->to(at::kFloat).contiguous();
}

float *fptr(const Tensor &t)
{
    if (!t.defined())
        return nullptr;
    return t.numel() ? t.data_ptr<float>() : null_row;
}

// The statistics (mean, rstd): float32 of x's leading shape.
Tensor stat(const Shape &s)
{
    return at::empty(s.lead, at::TensorOptions().dtype(at::kFloat));
}

// A float32 parameter gradient (zeros when there are no rows: keel then writes nothing), or an
// empty placeholder when not wanted.
Tensor grad_param(bool wanted, at::IntArrayRef dims, const Shape &s)
{
    auto opts = at::TensorOptions().dtype(at::kFloat);
    if (!wanted)
        return at::empty({0}, opts);
    return s.rows ? at::empty(dims, opts) : at::zeros(dims, opts);
}

float as_eps(double eps)
{
    return static_cast<float>(eps);
}

// ---- CPU kernels ----------------------------------------------------------------------------------

unsigned unit_offset_flag(bool unit_offset)
{
    return unit_offset ? KEEL_FLAG_GAMMA_PLUS_ONE : 0u;
}

// LayerNorm (rms false) or RMSNorm forward: (y, mean, rstd), mean undefined for RMSNorm (bias
// must then be absent).
std::tuple<Tensor, Tensor, Tensor> norm_cpu(bool rms, const Tensor &x, at::IntArrayRef dims,
                                            const OptTensor &weight, const OptTensor &bias, double eps,
                                            bool unit_offset)
{
    const char *who = rms ? "keel.torch.rms_norm" : "keel.torch.layer_norm";
    Shape s = split(x, dims, who);
    Rows rx = rows_of(x, s, who, "x");
    Tensor w = param(weight, dims, who, "weight");
    Rows ry = output(true, x.sizes(), x.scalar_type(), s);
    Tensor rstd = stat(s);
    auto rows = static_cast<size_t>(s.rows), dim = static_cast<size_t>(s.dim);
    if (rms) {
        call(api.rmsnorm_fwd, rows, dim, rx.kt, ry.kt, fptr(w), as_eps(eps), fptr(rstd),
             unit_offset_flag(unit_offset));
        return {ry.keep, Tensor(), rstd};
    }
    Tensor b = param(bias, dims, who, "bias"), mean = stat(s);
    call(api.layernorm_fwd, rows, dim, rx.kt, ry.kt, fptr(w), fptr(b), as_eps(eps), fptr(mean), fptr(rstd),
         0u);
    return {ry.keep, mean, rstd};
}

// LayerNorm or RMSNorm backward: (dx, dweight, dbias), empty placeholders for those not in mask
// (RMSNorm: no mean, no dbias).
std::tuple<Tensor, Tensor, Tensor> norm_backward_cpu(bool rms, const Tensor &dy, const Tensor &x,
                                                     at::IntArrayRef dims, const OptTensor &mean,
                                                     const Tensor &rstd, const OptTensor &weight, double eps,
                                                     bool unit_offset, std::array<bool, 3> mask)
{
    const char *who = rms ? "keel.torch.rms_norm_backward" : "keel.torch.layer_norm_backward";
    Shape s = split(x, dims, who);
    split(dy, dims, who, "dy");
    Rows rdy = rows_of(dy, s, who, "dy"), rx = rows_of(x, s, who, "x");
    Tensor w = param(weight, dims, who, "weight");
    Rows rdx = output(mask[0], x.sizes(), x.scalar_type(), s);
    Tensor dw = grad_param(mask[1], dims, s), db = grad_param(mask[2], dims, s);
    Tensor r = rstd.to(at::kFloat).contiguous();
    auto rows = static_cast<size_t>(s.rows), dim = static_cast<size_t>(s.dim);
    float *pdw = mask[1] ? fptr(dw) : nullptr;
    if (rms) {
        call(api.rmsnorm_bwd, rows, dim, rdy.kt, rx.kt, fptr(r), fptr(w), as_eps(eps), rdx.kt, pdw,
             unit_offset_flag(unit_offset));
    } else {
        Tensor m = mean->to(at::kFloat).contiguous();
        call(api.layernorm_bwd, rows, dim, rdy.kt, rx.kt, fptr(m), fptr(r), fptr(w), as_eps(eps), rdx.kt, pdw,
             mask[2] ? fptr(db) : nullptr, 0u);
    }
    return {rdx.keep, dw, db};
}

std::tuple<Tensor, Tensor, Tensor> layer_norm_cpu(const Tensor &x, at::IntArrayRef dims, const OptTensor &weight,
                                                  const OptTensor &bias, double eps)
{
    return norm_cpu(false, x, dims, weight, bias, eps, false);
}

std::tuple<Tensor, Tensor, Tensor> layer_norm_backward_cpu(const Tensor &dy, const Tensor &x, at::IntArrayRef dims,
                                                           const Tensor &mean, const Tensor &rstd,
                                                           const OptTensor &weight, double eps,
                                                           std::array<bool, 3> mask)
{
    return norm_backward_cpu(false, dy, x, dims, mean, rstd, weight, eps, false, mask);
}

std::tuple<Tensor, Tensor> rms_norm_cpu(const Tensor &x, at::IntArrayRef dims, const OptTensor &weight, double eps,
                                        bool unit_offset)
{
    auto [y, mean, rstd] = norm_cpu(true, x, dims, weight, std::nullopt, eps, unit_offset);
    (void)mean;
    return {y, rstd};
}

std::tuple<Tensor, Tensor> rms_norm_backward_cpu(const Tensor &dy, const Tensor &x, at::IntArrayRef dims,
                                                 const Tensor &rstd, const OptTensor &weight, double eps,
                                                 bool unit_offset, std::array<bool, 2> mask)
{
    auto [dx, dw, db] = norm_backward_cpu(true, dy, x, dims, std::nullopt, rstd, weight, eps, unit_offset,
                                          {mask[0], mask[1], false});
    (void)db;
    return {dx, dw};
}

// The fused residual add + norm. h = alpha * x + branch_scale * branch + skip_bias, y = norm(h).
// `rms`: RMSNorm (bias must be absent), else LayerNorm. Outputs (y, h, mean, rstd): h and mean
// are empty placeholders when not returned (return_sum false; RMSNorm has no mean).
std::tuple<Tensor, Tensor, Tensor, Tensor> add_norm_cpu(bool rms, const Tensor &x, const Tensor &branch,
                                                        at::IntArrayRef dims, const OptTensor &weight,
                                                        const OptTensor &bias, double eps, double alpha,
                                                        const OptTensor &branch_scale, const OptTensor &skip_bias,
                                                        bool return_sum, bool unit_offset)
{
    const char *who = rms ? "keel.torch.add_rms_norm" : "keel.torch.add_layer_norm";
    Shape s = split(x, dims, who);
    TORCH_CHECK_VALUE(branch.sizes() == x.sizes(), who, ": branch.shape ", py_tuple(branch.sizes()), " != x.shape ",
                      py_tuple(x.sizes()));
    Rows rx = rows_of(x, s, who, "x"), rb = rows_of(branch, s, who, "branch");
    Tensor scale = param(branch_scale, dims, who, "branch_scale"), sbias = param(skip_bias, dims, who, "skip_bias");
    keel_residual res{rx.kt, rb.kt, static_cast<float>(alpha), fptr(scale), fptr(sbias)};
    at::ScalarType dtype = at::promote_types(x.scalar_type(), branch.scalar_type());
    Rows rh = output(return_sum, x.sizes(), dtype, s), ry = output(true, x.sizes(), dtype, s);
    Tensor w = param(weight, dims, who, "weight");
    Tensor rstd = stat(s);
    auto rows = static_cast<size_t>(s.rows), dim = static_cast<size_t>(s.dim);
    if (rms) {
        call(api.add_rmsnorm_fwd, rows, dim, &res, rh.kt, ry.kt, fptr(w), as_eps(eps), fptr(rstd),
             unit_offset_flag(unit_offset));
        return {ry.keep, rh.keep, at::empty({0}, rstd.options()), rstd};
    }
    Tensor b = param(bias, dims, who, "bias"), mean = stat(s);
    call(api.add_layernorm_fwd, rows, dim, &res, rh.kt, ry.kt, fptr(w), fptr(b), as_eps(eps), fptr(mean), fptr(rstd),
         0u);
    return {ry.keep, rh.keep, mean, rstd};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> add_layer_norm_cpu(const Tensor &x, const Tensor &branch,
                                                              at::IntArrayRef dims, const OptTensor &weight,
                                                              const OptTensor &bias, double eps, double alpha,
                                                              const OptTensor &branch_scale,
                                                              const OptTensor &skip_bias, bool return_sum)
{
    return add_norm_cpu(false, x, branch, dims, weight, bias, eps, alpha, branch_scale, skip_bias, return_sum, false);
}

std::tuple<Tensor, Tensor, Tensor> add_rms_norm_cpu(const Tensor &x, const Tensor &branch, at::IntArrayRef dims,
                                                    const OptTensor &weight, double eps, double alpha,
                                                    const OptTensor &branch_scale, const OptTensor &skip_bias,
                                                    bool return_sum, bool unit_offset)
{
    auto [y, h, mean, rstd] = add_norm_cpu(true, x, branch, dims, weight, std::nullopt, eps, alpha, branch_scale,
                                           skip_bias, return_sum, unit_offset);
    (void)mean;
    return {y, h, rstd};
}

// The fused backward: (dx, dbranch, dweight, dbias, dbranch_scale, dskip_bias), empty placeholders
// for those not in mask. h: the forward's h, or absent (then recomputed from x and branch).
// x_dtype, branch_dtype: the dtypes of dx and dbranch.
std::vector<Tensor> add_norm_backward_cpu(bool rms, const Tensor &dy, const OptTensor &dh, const OptTensor &h,
                                          const OptTensor &x, const OptTensor &branch, at::IntArrayRef dims,
                                          const OptTensor &mean, const Tensor &rstd, const OptTensor &weight,
                                          double eps, double alpha, const OptTensor &branch_scale,
                                          const OptTensor &skip_bias, at::ScalarType x_dtype,
                                          at::ScalarType branch_dtype, bool unit_offset, std::array<bool, 6> mask)
{
    const char *who = rms ? "keel.torch.add_rms_norm_backward" : "keel.torch.add_layer_norm_backward";
    Shape s = split(dy, dims, who, "dy");
    Rows rdy = rows_of(dy, s, who, "dy"), rdh = rows_or_none(dh, s, who, "dh");
    Rows rh = rows_or_none(h, s, who, "h"), rx = rows_or_none(x, s, who, "x"), rb = rows_or_none(branch, s, who, "branch");
    Tensor scale = param(branch_scale, dims, who, "branch_scale"), sbias = param(skip_bias, dims, who, "skip_bias");
    keel_residual res{rx.kt, rb.kt, static_cast<float>(alpha), fptr(scale), fptr(sbias)};
    Rows rdx = output(mask[0], dy.sizes(), x_dtype, s), rdb = output(mask[1], dy.sizes(), branch_dtype, s);
    Tensor dscale = grad_param(mask[4], dims, s), dsbias = grad_param(mask[5], dims, s);
    keel_residual_grads grads{rdx.kt, rdb.kt, mask[4] ? fptr(dscale) : nullptr, mask[5] ? fptr(dsbias) : nullptr};
    Tensor dw = grad_param(mask[2], dims, s), db = grad_param(mask[3], dims, s);
    Tensor w = param(weight, dims, who, "weight");
    Tensor r = rstd.to(at::kFloat).contiguous();
    auto rows = static_cast<size_t>(s.rows), dim = static_cast<size_t>(s.dim);
    if (rms) {
        call(api.add_rmsnorm_bwd, rows, dim, rdy.kt, rdh.kt, &res, rh.kt, fptr(r), fptr(w), as_eps(eps), &grads,
             mask[2] ? fptr(dw) : nullptr, unit_offset_flag(unit_offset));
    } else {
        Tensor m = mean->to(at::kFloat).contiguous();
        call(api.add_layernorm_bwd, rows, dim, rdy.kt, rdh.kt, &res, rh.kt, fptr(m), fptr(r), fptr(w), as_eps(eps),
             &grads, mask[2] ? fptr(dw) : nullptr, mask[3] ? fptr(db) : nullptr, 0u);
    }
    return {rdx.keep, rdb.keep, dw, db, dscale, dsbias};
}

std::vector<Tensor> add_layer_norm_backward_cpu(const Tensor &dy, const OptTensor &dh, const OptTensor &h,
                                                const OptTensor &x, const OptTensor &branch, at::IntArrayRef dims,
                                                const Tensor &mean, const Tensor &rstd, const OptTensor &weight,
                                                double eps, double alpha, const OptTensor &branch_scale,
                                                const OptTensor &skip_bias, at::ScalarType x_dtype,
                                                at::ScalarType branch_dtype, std::array<bool, 6> mask)
{
    return add_norm_backward_cpu(false, dy, dh, h, x, branch, dims, mean, rstd, weight, eps, alpha, branch_scale,
                                 skip_bias, x_dtype, branch_dtype, false, mask);
}

std::vector<Tensor> add_rms_norm_backward_cpu(const Tensor &dy, const OptTensor &dh, const OptTensor &h,
                                              const OptTensor &x, const OptTensor &branch, at::IntArrayRef dims,
                                              const Tensor &rstd, const OptTensor &weight, double eps, double alpha,
                                              const OptTensor &branch_scale, const OptTensor &skip_bias,
                                              at::ScalarType x_dtype, at::ScalarType branch_dtype, bool unit_offset,
                                              std::array<bool, 5> mask5)
{
    std::array<bool, 6> mask{mask5[0], mask5[1], mask5[2], false, mask5[3], mask5[4]};
    auto g = add_norm_backward_cpu(true, dy, dh, h, x, branch, dims, std::nullopt, rstd, weight, eps, alpha,
                                   branch_scale, skip_bias, x_dtype, branch_dtype, unit_offset, mask);
    return {g[0], g[1], g[2], g[4], g[5]};
}

// ---- autograd -------------------------------------------------------------------------------------
//
// Each op's Autograd kernel runs the op below autograd and, when a gradient is due, connects its
// outputs to a backward node of its own (as torch's generated autograd code does: no per-call
// bookkeeping beyond the saved tensors). The node calls the op's backward operator through the
// dispatcher, so that tracers record it.

namespace ag = torch::autograd;

template <typename Sig> c10::TypedOperatorHandle<Sig> op(const char *name)
{
    return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

Tensor or_undefined(const OptTensor &t)
{
    return t && t->defined() ? *t : Tensor();
}

OptTensor optional_of(const Tensor &t)
{
    return t.defined() ? OptTensor(t) : std::nullopt;
}

// A gradient computed by keel as autograd wants it: undefined when not wanted, in the dtype of the
// parameter it belongs to (keel's parameter gradients are float32).
Tensor grad_as(bool wanted, const Tensor &g, const Tensor &like)
{
    if (!wanted)
        return Tensor();
    return like.defined() && g.scalar_type() != like.scalar_type() ? g.to(like.scalar_type()) : g;
}

// The gradients of `outputs` with respect to `inputs` (those defined and requiring a gradient),
// differentiable: the backward of a backward computed again with torch's own ops, so that its
// gradient exists (create_graph=True). keel's first derivative is what these ops give too, up to
// float rounding; the second derivative then follows torch's formulas.
variable_list differentiable_grads(const variable_list &outputs, const variable_list &grad_outputs,
                                   const variable_list &inputs)
{
    variable_list outs, gouts, ins;
    for (size_t i = 0; i < outputs.size(); i++)
        if (grad_outputs[i].defined() && outputs[i].defined()) {
            outs.push_back(outputs[i]);
            gouts.push_back(grad_outputs[i]);
        }
    std::vector<size_t> where;
    for (size_t i = 0; i < inputs.size(); i++)
        if (inputs[i].defined() && inputs[i].requires_grad()) {
            where.push_back(i);
            ins.push_back(inputs[i]);
        }
    variable_list result(inputs.size());
    if (ins.empty() || outs.empty())
        return result;
    auto g = ag::grad(outs, ins, gouts, /*retain_graph=*/true, /*create_graph=*/true, /*allow_unused=*/true);
    for (size_t i = 0; i < where.size(); i++)
        result[where[i]] = g[i];
    return result;
}

// RMSNorm in torch's differentiable ops (the create_graph path): (1 + weight) for unit_offset.
Tensor rms_norm_reference(const Tensor &x, at::IntArrayRef dims, const Tensor &w, double eps, bool unit_offset)
{
    OptTensor weight = w.defined() ? OptTensor(unit_offset ? w + 1 : w) : std::nullopt;
    return at::rms_norm(x, dims, weight, eps);
}

// The residual h of the fused ops in torch's differentiable ops (the create_graph path), in
// keel's order: ((alpha * x) + (branch_scale * branch)) + skip_bias.
Tensor residual_reference(const Tensor &x, const Tensor &branch, double alpha, const Tensor &scale,
                          const Tensor &sbias)
{
    Tensor h = (alpha == 1.0 ? x : x * alpha) + (scale.defined() ? branch * scale : branch);
    return sbias.defined() ? h + sbias : h;
}

// The gradient of a keel backward (create_graph=True: torch.func.grad, gradient penalties,
// double backward). The first derivative stays keel's: the backward node computes it with keel
// as always, and when a gradient of it is due hands its outputs to this node, which holds the
// backward's inputs and `first`, the same backward written in torch's differentiable ops; its
// apply differentiates `first` again (a vector-Jacobian product of the first derivative).
struct RecomputedBackward : ag::Node {
    std::vector<ag::SavedVariable> saved;                       // the first backward's inputs
    std::function<variable_list(const variable_list &)> first;  // its outputs from them

    std::string name() const override
    {
        return "keel::RecomputedBackward";
    }

    void release_variables() override
    {
        std::lock_guard<std::mutex> lock(mutex_);
        for (auto &s : saved)
            s.reset_data();
    }

    variable_list apply(variable_list &&grads) override
    {
        variable_list in;
        for (auto &s : saved)
            in.push_back(s.unpack());
        bool create = at::GradMode::is_enabled();  // a third derivative on the way
        variable_list leaves(in.size());
        for (size_t i = 0; i < in.size(); i++)
            if (in[i].defined())
                leaves[i] = create && in[i].requires_grad() ? in[i] : in[i].detach().requires_grad_(true);
        variable_list outs;
        {
            at::AutoGradMode on(true);
            outs = first(leaves);
        }
        variable_list o, go, ins, result(in.size());
        for (size_t j = 0; j < outs.size() && j < grads.size(); j++)
            if (grads[j].defined() && outs[j].defined() && outs[j].requires_grad()) {
                o.push_back(outs[j]);
                go.push_back(grads[j].to(outs[j].scalar_type()));
            }
        std::vector<size_t> where;
        for (size_t i = 0; i < in.size(); i++)
            if (leaves[i].defined() && should_compute_output(i)) {
                where.push_back(i);
                ins.push_back(leaves[i]);
            }
        if (o.empty() || ins.empty())
            return result;
        auto g = ag::grad(o, ins, go, /*retain_graph=*/create, /*create_graph=*/create, /*allow_unused=*/true);
        for (size_t k = 0; k < where.size(); k++)
            result[where[k]] = g[k];
        return result;
    }
};

// Makes `outputs` (a keel backward's results) differentiable with respect to `inputs` (that
// backward's inputs) through a RecomputedBackward, when any input requires a gradient.
void attach_second_order(const variable_list &outputs, const variable_list &inputs,
                         std::function<variable_list(const variable_list &)> first)
{
    bool any = false;
    for (const Tensor &t : inputs)
        any = any || (t.defined() && t.requires_grad());
    if (!any)
        return;
    auto node = c10::make_intrusive<RecomputedBackward>();
    node->set_next_edges(ag::collect_next_edges(inputs));
    for (const Tensor &t : inputs)
        node->saved.emplace_back(t, false);
    node->first = std::move(first);
    for (const Tensor &o : outputs)
        ag::set_history(o, node);
}

// Forward-mode AD (torch.func.jvp, jacfwd, hessian, torch.autograd.forward_ad) has no formula
// here: refused, never a silent zero tangent.
void refuse_forward_ad(const char *who, std::initializer_list<Tensor> inputs)
{
    for (const Tensor &t : inputs)
        TORCH_CHECK(!ag::isFwGradDefined(t), who,
                    ": forward-mode automatic differentiation (torch.func.jvp, jacfwd, hessian, forward_ad) is not "
                    "supported by keel's operators; use reverse mode (backward, torch.func.grad, jacrev), or "
                    "torch's own op for this computation");
}

// What every backward node holds: the saved tensors (in the order the node reads them), the
// normalized shape and eps.
struct KeelBackward : ag::Node {
    std::vector<ag::SavedVariable> saved;
    std::vector<int64_t> dims;
    double eps = 0;

    void save(const Tensor &t, bool is_output = false)
    {
        saved.emplace_back(t, is_output);
    }

    std::vector<Tensor> unpack()
    {
        std::vector<Tensor> v;
        v.reserve(saved.size());
        for (auto &s : saved)
            v.push_back(s.unpack(getptr()));
        return v;
    }

    void release_variables() override
    {
        std::lock_guard<std::mutex> lock(mutex_);
        for (auto &s : saved)
            s.reset_data();
    }
};

using ThreeTensors = std::tuple<Tensor, Tensor, Tensor>;
using TwoTensors = std::tuple<Tensor, Tensor>;
using FourTensors = std::tuple<Tensor, Tensor, Tensor, Tensor>;

// LayerNorm: inputs (x, weight, bias); saved x, weight, bias, mean, rstd.
struct LayerNormBackward : KeelBackward {
    std::string name() const override
    {
        return "keel::LayerNormBackward";
    }

    variable_list apply(variable_list &&grads) override
    {
        auto v = unpack();
        const Tensor &dy = grads[0], &x = v[0], &w = v[1], &b = v[2];
        if (!dy.defined())
            return variable_list(3);
        bool create = at::GradMode::is_enabled();  // create_graph: a gradient of this gradient
        std::array<bool, 3> need{should_compute_output(0), should_compute_output(1), should_compute_output(2)};
        using Sig = ThreeTensors(const Tensor &, const Tensor &, at::IntArrayRef, const Tensor &, const Tensor &,
                                 const OptTensor &, double, std::array<bool, 3>);
        static auto bwd = op<Sig>("keel::layer_norm_backward");
        variable_list result;
        {
            at::AutoDispatchBelowADInplaceOrView guard;
            auto [dx, dw, db] = bwd.call(dy, x, dims, v[3], v[4], optional_of(w), eps, need);
            result = {grad_as(need[0], dx, Tensor()), grad_as(need[1], dw, w), grad_as(need[2], db, b)};
        }
        if (create)
            attach_second_order(result, {dy, x, w, b}, [dims = dims, eps = eps](const variable_list &in) {
                Tensor y = at::layer_norm(in[1], dims, optional_of(in[2]), optional_of(in[3]), eps);
                return differentiable_grads({y}, {in[0]}, {in[1], in[2], in[3]});
            });
        return result;
    }
};

ThreeTensors layer_norm_autograd(const Tensor &x, at::IntArrayRef dims, const OptTensor &weight, const OptTensor &bias,
                                 double eps)
{
    using Sig = ThreeTensors(const Tensor &, at::IntArrayRef, const OptTensor &, const OptTensor &, double);
    static auto fwd = op<Sig>("keel::layer_norm");
    Tensor w = or_undefined(weight), b = or_undefined(bias), y, mean, rstd;
    refuse_forward_ad("keel::layer_norm", {x, w, b});
    {
        at::AutoDispatchBelowADInplaceOrView guard;
        std::tie(y, mean, rstd) = fwd.call(x, dims, weight, bias, eps);
    }
    if (ag::compute_requires_grad(x, w, b)) {
        auto node = c10::make_intrusive<LayerNormBackward>();
        node->set_next_edges(ag::collect_next_edges(x, w, b));
        for (const Tensor &t : {x, w, b, mean, rstd})
            node->save(t);
        node->dims = dims.vec();
        node->eps = eps;
        ag::set_history(y, node);
    }
    return {y, mean, rstd};
}

// RMSNorm: inputs (x, weight); saved x, weight, rstd.
struct RMSNormBackward : KeelBackward {
    bool unit_offset = false;

    std::string name() const override
    {
        return "keel::RMSNormBackward";
    }

    variable_list apply(variable_list &&grads) override
    {
        auto v = unpack();
        const Tensor &dy = grads[0], &x = v[0], &w = v[1];
        if (!dy.defined())
            return variable_list(2);
        bool create = at::GradMode::is_enabled();
        std::array<bool, 2> need{should_compute_output(0), should_compute_output(1)};
        using Sig = TwoTensors(const Tensor &, const Tensor &, at::IntArrayRef, const Tensor &, const OptTensor &,
                               double, bool, std::array<bool, 2>);
        static auto bwd = op<Sig>("keel::rms_norm_backward");
        variable_list result;
        {
            at::AutoDispatchBelowADInplaceOrView guard;
            auto [dx, dw] = bwd.call(dy, x, dims, v[2], optional_of(w), eps, unit_offset, need);
            result = {grad_as(need[0], dx, Tensor()), grad_as(need[1], dw, w)};
        }
        if (create)
            attach_second_order(result, {dy, x, w},
                                [dims = dims, eps = eps, unit_offset = unit_offset](const variable_list &in) {
                                    Tensor y = rms_norm_reference(in[1], dims, in[2], eps, unit_offset);
                                    return differentiable_grads({y}, {in[0]}, {in[1], in[2]});
                                });
        return result;
    }
};

TwoTensors rms_norm_autograd(const Tensor &x, at::IntArrayRef dims, const OptTensor &weight, double eps,
                             bool unit_offset)
{
    using Sig = TwoTensors(const Tensor &, at::IntArrayRef, const OptTensor &, double, bool);
    static auto fwd = op<Sig>("keel::rms_norm");
    Tensor w = or_undefined(weight), y, rstd;
    refuse_forward_ad("keel::rms_norm", {x, w});
    {
        at::AutoDispatchBelowADInplaceOrView guard;
        std::tie(y, rstd) = fwd.call(x, dims, weight, eps, unit_offset);
    }
    if (ag::compute_requires_grad(x, w)) {
        auto node = c10::make_intrusive<RMSNormBackward>();
        node->set_next_edges(ag::collect_next_edges(x, w));
        for (const Tensor &t : {x, w, rstd})
            node->save(t);
        node->dims = dims.vec();
        node->eps = eps;
        node->unit_offset = unit_offset;
        ag::set_history(y, node);
    }
    return {y, rstd};
}

// The fused add + norm: inputs (x, branch, weight, bias, branch_scale, skip_bias); outputs y and,
// with return_sum, h. Saved h, x, branch, weight, bias, branch_scale, skip_bias, mean, rstd:
// with h returned, h stands for x (x is not kept) and branch is kept only for dbranch_scale;
// without, x and branch are kept and keel recomputes h in the backward, bitwise the forward's.
// What the fused backward's differentiable form needs of its forward.
struct AddNormSpec {
    bool rms = false, unit_offset = false;
    double alpha = 1, eps = 0;
    std::vector<int64_t> dims;
    at::ScalarType x_dtype = at::kFloat, branch_dtype = at::kFloat;
};

// The fused backward in torch's differentiable ops, from (dy, dh, h, x, branch, weight, bias,
// branch_scale, skip_bias), to (dx, dbranch, dweight, dbias, dbranch_scale, dskip_bias). With h
// (an output of the forward, so differentiable back through the forward's node),
// G = dh + the norm's gradient at h, dx = alpha * G, dbranch = branch_scale * G,
// dbranch_scale = sum over rows of G * branch, dskip_bias = sum over rows of G; without h
// (post-norm), h is recomputed from x and branch and differentiated whole.
variable_list add_norm_first_backward(const AddNormSpec &sp, const variable_list &in)
{
    const Tensor &dy = in[0], &dh = in[1], &h = in[2], &x = in[3], &branch = in[4], &w = in[5], &b = in[6];
    const Tensor &scale = in[7], &sbias = in[8];
    auto norm = [&](const Tensor &hr) {
        return sp.rms ? rms_norm_reference(hr, sp.dims, w, sp.eps, sp.unit_offset)
                      : at::layer_norm(hr, sp.dims, optional_of(w), optional_of(b), sp.eps);
    };
    if (!h.defined())
        return differentiable_grads({norm(residual_reference(x, branch, sp.alpha, scale, sbias))}, {dy},
                                    {x, branch, w, b, scale, sbias});
    variable_list g = dy.defined() ? differentiable_grads({norm(h)}, {dy}, {h, w, b}) : variable_list(3);
    Tensor G = g[0].defined() ? (dh.defined() ? g[0] + dh : g[0]) : dh;
    int64_t dim = 1;
    for (int64_t d : sp.dims)
        dim *= d;
    auto per_feature = [&](const Tensor &t) { return t.reshape({-1, dim}).sum(0).reshape(sp.dims); };
    return {(sp.alpha == 1.0 ? G : G * sp.alpha).to(sp.x_dtype),
            (scale.defined() ? G * scale : G).to(sp.branch_dtype),
            g[1],
            g[2],
            scale.defined() && branch.defined() ? per_feature(G * branch) : Tensor(),
            sbias.defined() ? per_feature(G) : Tensor()};
}

struct AddNormBackward : KeelBackward {
    AddNormSpec sp;
    bool return_sum = false;
    at::ScalarType y_dtype = at::kFloat;
    std::vector<int64_t> shape;  // of x

    std::string name() const override
    {
        return sp.rms ? "keel::AddRMSNormBackward" : "keel::AddLayerNormBackward";
    }

    variable_list apply(variable_list &&grads) override
    {
        auto v = unpack();
        Tensor dy = grads[0], dh = return_sum ? grads[1] : Tensor();
        if (!dy.defined() && !dh.defined())
            return variable_list(6);
        const Tensor &h = v[0], &x = v[1], &branch = v[2], &w = v[3], &b = v[4], &scale = v[5], &sbias = v[6];
        bool create = at::GradMode::is_enabled();  // create_graph: a gradient of this gradient
        Tensor dy_in = dy;
        if (!dy.defined())  // only h was used: y passes no gradient (keel needs a dy)
            dy = at::zeros(shape, at::TensorOptions().dtype(y_dtype));
        std::array<bool, 6> need;
        for (size_t i = 0; i < 6; i++)
            need[i] = should_compute_output(i);
        // alpha 1 and no branch_scale: dx = dbranch, computed once (torch's add also hands one
        // tensor to both inputs); apart when they need gradients of their own
        bool same = need[0] && need[1] && sp.alpha == 1.0 && !scale.defined() && sp.x_dtype == sp.branch_dtype &&
                    !create;
        OptTensor oh = optional_of(h), ox = optional_of(x), ob = optional_of(branch), odh = optional_of(dh);
        OptTensor ow = optional_of(w), os = optional_of(scale), osb = optional_of(sbias);
        variable_list result;
        {
            at::AutoDispatchBelowADInplaceOrView guard;
            std::vector<Tensor> g;
            if (sp.rms) {
                using Sig = std::vector<Tensor>(const Tensor &, const OptTensor &, const OptTensor &,
                                                const OptTensor &, const OptTensor &, at::IntArrayRef, const Tensor &,
                                                const OptTensor &, double, double, const OptTensor &,
                                                const OptTensor &, at::ScalarType, at::ScalarType, bool,
                                                std::array<bool, 5>);
                static auto bwd = op<Sig>("keel::add_rms_norm_backward");
                auto r = bwd.call(dy, odh, oh, ox, ob, dims, v[8], ow, eps, sp.alpha, os, osb, sp.x_dtype,
                                  sp.branch_dtype, sp.unit_offset, {need[0], need[1] && !same, need[2], need[4], need[5]});
                g = {r[0], r[1], r[2], Tensor(), r[3], r[4]};
            } else {
                using Sig = std::vector<Tensor>(const Tensor &, const OptTensor &, const OptTensor &,
                                                const OptTensor &, const OptTensor &, at::IntArrayRef, const Tensor &,
                                                const Tensor &, const OptTensor &, double, double, const OptTensor &,
                                                const OptTensor &, at::ScalarType, at::ScalarType, std::array<bool, 6>);
                static auto bwd = op<Sig>("keel::add_layer_norm_backward");
                g = bwd.call(dy, odh, oh, ox, ob, dims, v[7], v[8], ow, eps, sp.alpha, os, osb, sp.x_dtype,
                             sp.branch_dtype, {need[0], need[1] && !same, need[2], need[3], need[4], need[5]});
            }
            Tensor dx = grad_as(need[0], g[0], Tensor());
            result = {dx,
                      same ? dx : grad_as(need[1], g[1], Tensor()),
                      grad_as(need[2], g[2], w),
                      grad_as(need[3], g[3], b),
                      grad_as(need[4], g[4], scale),
                      grad_as(need[5], g[5], sbias)};
        }
        if (create)
            attach_second_order(result, {dy_in, dh, h, x, branch, w, b, scale, sbias},
                                [sp = sp](const variable_list &in) { return add_norm_first_backward(sp, in); });
        return result;
    }
};

// Connects the fused forward's outputs (y, h) to its backward node when a gradient is due.
void add_norm_history(bool rms, const Tensor &x, const Tensor &branch, at::IntArrayRef dims, const OptTensor &weight,
                      const OptTensor &bias, double eps, double alpha, const OptTensor &branch_scale,
                      const OptTensor &skip_bias, bool return_sum, bool unit_offset, const Tensor &y,
                      const Tensor &h, const Tensor &mean, const Tensor &rstd)
{
    Tensor w = or_undefined(weight), b = or_undefined(bias), scale = or_undefined(branch_scale);
    Tensor sbias = or_undefined(skip_bias);
    refuse_forward_ad(rms ? "keel::add_rms_norm" : "keel::add_layer_norm", {x, branch, w, b, scale, sbias});
    if (!ag::compute_requires_grad(x, branch, w, b, scale, sbias))
        return;
    auto node = c10::make_intrusive<AddNormBackward>();
    node->set_next_edges(ag::collect_next_edges(x, branch, w, b, scale, sbias));
    bool keep_branch = !return_sum || (scale.defined() && scale.requires_grad());
    node->save(return_sum ? h : Tensor(), /*is_output=*/true);
    node->save(return_sum ? Tensor() : x);
    node->save(keep_branch ? branch : Tensor());
    for (const Tensor &t : {w, b, scale, sbias, mean, rstd})
        node->save(t);
    node->dims = dims.vec();
    node->eps = eps;
    node->sp = AddNormSpec{rms, unit_offset, alpha, eps, dims.vec(), x.scalar_type(), branch.scalar_type()};
    node->return_sum = return_sum;
    node->y_dtype = y.scalar_type();
    node->shape = x.sizes().vec();
    ag::set_history(y, node);
    if (return_sum)
        ag::set_history(h, node);
}

FourTensors add_layer_norm_autograd(const Tensor &x, const Tensor &branch, at::IntArrayRef dims,
                                    const OptTensor &weight, const OptTensor &bias, double eps, double alpha,
                                    const OptTensor &branch_scale, const OptTensor &skip_bias, bool return_sum)
{
    using Sig = FourTensors(const Tensor &, const Tensor &, at::IntArrayRef, const OptTensor &, const OptTensor &,
                            double, double, const OptTensor &, const OptTensor &, bool);
    static auto fwd = op<Sig>("keel::add_layer_norm");
    Tensor y, h, mean, rstd;
    {
        at::AutoDispatchBelowADInplaceOrView guard;
        std::tie(y, h, mean, rstd) =
            fwd.call(x, branch, dims, weight, bias, eps, alpha, branch_scale, skip_bias, return_sum);
    }
    add_norm_history(false, x, branch, dims, weight, bias, eps, alpha, branch_scale, skip_bias, return_sum, false, y,
                     h, mean, rstd);
    return {y, h, mean, rstd};
}

ThreeTensors add_rms_norm_autograd(const Tensor &x, const Tensor &branch, at::IntArrayRef dims,
                                   const OptTensor &weight, double eps, double alpha, const OptTensor &branch_scale,
                                   const OptTensor &skip_bias, bool return_sum, bool unit_offset)
{
    using Sig = ThreeTensors(const Tensor &, const Tensor &, at::IntArrayRef, const OptTensor &, double, double,
                             const OptTensor &, const OptTensor &, bool, bool);
    static auto fwd = op<Sig>("keel::add_rms_norm");
    Tensor y, h, rstd;
    {
        at::AutoDispatchBelowADInplaceOrView guard;
        std::tie(y, h, rstd) =
            fwd.call(x, branch, dims, weight, eps, alpha, branch_scale, skip_bias, return_sum, unit_offset);
    }
    add_norm_history(true, x, branch, dims, weight, std::nullopt, eps, alpha, branch_scale, skip_bias, return_sum,
                     unit_offset, y, h, Tensor(), rstd);
    return {y, h, rstd};
}

}  // namespace

// ---- registration ---------------------------------------------------------------------------------

TORCH_LIBRARY(keel, m)
{
    m.def("layer_norm(Tensor x, int[] normalized_shape, Tensor? weight, Tensor? bias, float eps)"
          " -> (Tensor, Tensor, Tensor)");
    m.def("layer_norm_backward(Tensor dy, Tensor x, int[] normalized_shape, Tensor mean, Tensor rstd,"
          " Tensor? weight, float eps, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
    m.def("rms_norm(Tensor x, int[] normalized_shape, Tensor? weight, float eps, bool unit_offset)"
          " -> (Tensor, Tensor)");
    m.def("rms_norm_backward(Tensor dy, Tensor x, int[] normalized_shape, Tensor rstd, Tensor? weight, float eps,"
          " bool unit_offset, bool[2] output_mask) -> (Tensor, Tensor)");
    m.def("add_layer_norm(Tensor x, Tensor branch, int[] normalized_shape, Tensor? weight, Tensor? bias, float eps,"
          " float alpha, Tensor? branch_scale, Tensor? skip_bias, bool return_sum) -> (Tensor, Tensor, Tensor, Tensor)");
    m.def("add_layer_norm_backward(Tensor dy, Tensor? dh, Tensor? h, Tensor? x, Tensor? branch,"
          " int[] normalized_shape, Tensor mean, Tensor rstd, Tensor? weight, float eps, float alpha,"
          " Tensor? branch_scale, Tensor? skip_bias, ScalarType x_dtype, ScalarType branch_dtype,"
          " bool[6] output_mask) -> Tensor[]");
    m.def("add_rms_norm(Tensor x, Tensor branch, int[] normalized_shape, Tensor? weight, float eps, float alpha,"
          " Tensor? branch_scale, Tensor? skip_bias, bool return_sum, bool unit_offset) -> (Tensor, Tensor, Tensor)");
    m.def("add_rms_norm_backward(Tensor dy, Tensor? dh, Tensor? h, Tensor? x, Tensor? branch,"
          " int[] normalized_shape, Tensor rstd, Tensor? weight, float eps, float alpha, Tensor? branch_scale,"
          " Tensor? skip_bias, ScalarType x_dtype, ScalarType branch_dtype, bool unit_offset,"
          " bool[5] output_mask) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(keel, CPU, m)
{
    m.impl("layer_norm", &layer_norm_cpu);
    m.impl("layer_norm_backward", &layer_norm_backward_cpu);
    m.impl("rms_norm", &rms_norm_cpu);
    m.impl("rms_norm_backward", &rms_norm_backward_cpu);
    m.impl("add_layer_norm", &add_layer_norm_cpu);
    m.impl("add_layer_norm_backward", &add_layer_norm_backward_cpu);
    m.impl("add_rms_norm", &add_rms_norm_cpu);
    m.impl("add_rms_norm_backward", &add_rms_norm_backward_cpu);
}

TORCH_LIBRARY_IMPL(keel, Autograd, m)
{
    m.impl("layer_norm", &layer_norm_autograd);
    m.impl("rms_norm", &rms_norm_autograd);
    m.impl("add_layer_norm", &add_layer_norm_autograd);
    m.impl("add_rms_norm", &add_rms_norm_autograd);
}

// ---- binding to libkeel ----------------------------------------------------------------------------

extern "C" {

// The number of entry points keel_torch_bind expects, in the order of struct Api.
__attribute__((visibility("default"))) int keel_torch_api_entries(void)
{
    return kApiEntries;
}

// Binds the operators to libkeel: fns holds the addresses of keel_ctx_create, keel_ctx_destroy,
// keel_ctx_set_threads, keel_last_error, keel_layernorm_fwd, keel_layernorm_bwd,
// keel_rmsnorm_fwd, keel_rmsnorm_bwd, keel_add_layernorm_fwd, keel_add_rmsnorm_fwd,
// keel_add_layernorm_bwd, keel_add_rmsnorm_bwd (n of them). Returns 0, or -1 when n is wrong.
__attribute__((visibility("default"))) int keel_torch_bind(void *const *fns, int n)
{
    if (n != kApiEntries)
        return -1;
    std::lock_guard<std::mutex> lock(*ctx_mutex);
    static_assert(sizeof(Api) == kApiEntries * sizeof(void *), "Api holds function pointers only");
    std::memcpy(static_cast<void *>(&api), fns, sizeof(Api));
    if (!bound)
        pthread_atfork(nullptr, nullptr, forget_context_in_child);
    bound = true;
    return 0;
}

// Threads of the operators' context (n <= 0: one per core), as keel.set_num_threads. 0 or a
// keel_status.
__attribute__((visibility("default"))) int keel_torch_set_threads(int n)
{
    std::lock_guard<std::mutex> lock(*ctx_mutex);
    ctx_threads = n;
    return ctx ? api.ctx_set_threads(ctx, n) : 0;
}

}  // extern "C"
