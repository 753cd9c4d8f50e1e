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


#include "torch_common.h"

#include <ATen/ops/layer_norm.h>
#include <ATen/ops/rms_norm.h>

using namespace keel_torch;

namespace {

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
        std::array<bool, 3> need{should_compute_output(0), should_compute_output(1), should_compute_output(2)};
        using Sig = ThreeTensors(const Tensor &, const Tensor &, at::IntArrayRef, const Tensor &, const Tensor &,
                                 const OptTensor &, double, std::array<bool, 3>);
        static auto bwd = op<Sig>("keel::layer_norm_backward");
        // through autograd: with create_graph its Autograd kernel makes the result differentiable
        auto [dx, dw, db] = bwd.call(dy, x, dims, v[3], v[4], optional_of(w), eps, need);
        return {grad_as(need[0], dx, Tensor()), grad_as(need[1], dw, w), grad_as(need[2], db, b)};
    }
};

// keel::layer_norm_backward's Autograd kernel (gradients of gradients: see RecomputedBackward).
ThreeTensors layer_norm_backward_autograd(const Tensor &dy, const Tensor &x, at::IntArrayRef dims, const Tensor &mean,
                                          const Tensor &rstd, const OptTensor &weight, double eps,
                                          std::array<bool, 3> mask)
{
    using Sig = ThreeTensors(const Tensor &, const Tensor &, at::IntArrayRef, const Tensor &, const Tensor &,
                             const OptTensor &, double, std::array<bool, 3>);
    static auto bwd = op<Sig>("keel::layer_norm_backward");
    ThreeTensors out;
    {
        at::AutoDispatchBelowADInplaceOrView guard;
        out = bwd.call(dy, x, dims, mean, rstd, weight, eps, mask);
    }
    Tensor w = or_undefined(weight);
    if (ag::compute_requires_grad(dy, x, w))
        attach_second_order(wanted<3>({std::get<0>(out), std::get<1>(out), std::get<2>(out)}, mask), {dy, x, w},
                            [dims = dims.vec(), eps, mask](const variable_list &in) {
                                Tensor b = zero_leaf(mask[2], dims, in[1]);
                                Tensor y = at::layer_norm(in[1], dims, optional_of(in[2]), optional_of(b), eps);
                                return differentiable_grads({y}, {in[0]}, {in[1], in[2], b});
                            });
    return out;
}

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
        std::array<bool, 2> need{should_compute_output(0), should_compute_output(1)};
        using Sig = TwoTensors(const Tensor &, const Tensor &, at::IntArrayRef, const Tensor &, const OptTensor &,
                               double, bool, std::array<bool, 2>);
        static auto bwd = op<Sig>("keel::rms_norm_backward");
        auto [dx, dw] = bwd.call(dy, x, dims, v[2], optional_of(w), eps, unit_offset, need);
        return {grad_as(need[0], dx, Tensor()), grad_as(need[1], dw, w)};
    }
};

// keel::rms_norm_backward's Autograd kernel (gradients of gradients: see RecomputedBackward).
TwoTensors rms_norm_backward_autograd(const Tensor &dy, const Tensor &x, at::IntArrayRef dims, const Tensor &rstd,
                                      const OptTensor &weight, double eps, bool unit_offset, std::array<bool, 2> mask)
{
    using Sig = TwoTensors(const Tensor &, const Tensor &, at::IntArrayRef, const Tensor &, const OptTensor &, double,
                           bool, std::array<bool, 2>);
    static auto bwd = op<Sig>("keel::rms_norm_backward");
    TwoTensors out;
    {
        at::AutoDispatchBelowADInplaceOrView guard;
        out = bwd.call(dy, x, dims, rstd, weight, eps, unit_offset, mask);
    }
    Tensor w = or_undefined(weight);
    if (ag::compute_requires_grad(dy, x, w))
        attach_second_order(wanted<2>({std::get<0>(out), std::get<1>(out)}, mask), {dy, x, w},
                            [dims = dims.vec(), eps, unit_offset](const variable_list &in) {
                                Tensor y = rms_norm_reference(in[1], dims, in[2], eps, unit_offset);
                                return differentiable_grads({y}, {in[0]}, {in[1], in[2]});
                            });
    return out;
}

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
            std::vector<Tensor> g;  // through autograd: with create_graph the operator's Autograd kernel
            if (sp.rms) {           // makes the result differentiable

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
        return result;
    }
};

// The Autograd kernel of the fused backwards (gradients of gradients: see RecomputedBackward):
// outs are the operator's outputs (dx, dbranch, dweight, dbias, dbranch_scale, dskip_bias; RMSNorm
// without dbias), made differentiable with respect to (dy, dh, h, x, branch, weight, branch_scale,
// skip_bias).
void add_norm_backward_second_order(const AddNormSpec &sp, const std::vector<Tensor> &outs,
                                    const std::vector<bool> &mask, const Tensor &dy, const OptTensor &dh,
                                    const OptTensor &h, const OptTensor &x, const OptTensor &branch,
                                    const OptTensor &weight, const OptTensor &branch_scale, const OptTensor &skip_bias)
{
    variable_list inputs{dy,
                         or_undefined(dh),
                         or_undefined(h),
                         or_undefined(x),
                         or_undefined(branch),
                         or_undefined(weight),
                         or_undefined(branch_scale),
                         or_undefined(skip_bias)};
    if (!ag::compute_requires_grad(inputs))
        return;
    variable_list asked(outs.size());
    for (size_t i = 0; i < outs.size(); i++)
        asked[i] = mask[i] ? outs[i] : Tensor();
    bool with_bias = !sp.rms && mask[3];
    attach_second_order(asked, inputs, [sp, with_bias](const variable_list &in) {
        Tensor b = zero_leaf(with_bias, sp.dims, in[0]);
        auto g = add_norm_first_backward(sp, {in[0], in[1], in[2], in[3], in[4], in[5], b, in[6], in[7]});
        if (sp.rms)
            g.erase(g.begin() + 3);  // no dbias
        return g;
    });
}

std::vector<Tensor> add_layer_norm_backward_autograd(const Tensor &dy, const OptTensor &dh, const OptTensor &h,
                                                     const OptTensor &x, const OptTensor &branch,
                                                     at::IntArrayRef dims, const Tensor &mean, const Tensor &rstd,
                                                     const OptTensor &weight, double eps, double alpha,
                                                     const OptTensor &branch_scale, const OptTensor &skip_bias,
                                                     at::ScalarType x_dtype, at::ScalarType branch_dtype,
                                                     std::array<bool, 6> mask)
{
    using Sig = std::vector<Tensor>(const Tensor &, const OptTensor &, const OptTensor &, const OptTensor &,
                                    const OptTensor &, at::IntArrayRef, const Tensor &, const Tensor &,
                                    const OptTensor &, double, double, const OptTensor &, const OptTensor &,
                                    at::ScalarType, at::ScalarType, std::array<bool, 6>);
    static auto bwd = op<Sig>("keel::add_layer_norm_backward");
    std::vector<Tensor> out;
    {
        at::AutoDispatchBelowADInplaceOrView guard;
        out = bwd.call(dy, dh, h, x, branch, dims, mean, rstd, weight, eps, alpha, branch_scale, skip_bias, x_dtype,
                       branch_dtype, mask);
    }
    AddNormSpec sp{false, false, alpha, eps, dims.vec(), x_dtype, branch_dtype};
    add_norm_backward_second_order(sp, out, std::vector<bool>(mask.begin(), mask.end()), dy, dh, h, x, branch, weight, branch_scale,
                                   skip_bias);
    return out;
}

std::vector<Tensor> add_rms_norm_backward_autograd(const Tensor &dy, const OptTensor &dh, const OptTensor &h,
                                                   const OptTensor &x, const OptTensor &branch, at::IntArrayRef dims,
                                                   const Tensor &rstd, const OptTensor &weight, double eps,
                                                   double alpha, const OptTensor &branch_scale,
                                                   const OptTensor &skip_bias, at::ScalarType x_dtype,
                                                   at::ScalarType branch_dtype, bool unit_offset,
                                                   std::array<bool, 5> mask)
{
    using Sig = std::vector<Tensor>(const Tensor &, const OptTensor &, const OptTensor &, const OptTensor &,
                                    const OptTensor &, at::IntArrayRef, const Tensor &, const OptTensor &, double,
                                    double, const OptTensor &, const OptTensor &, at::ScalarType, at::ScalarType,
                                    bool, std::array<bool, 5>);
    static auto bwd = op<Sig>("keel::add_rms_norm_backward");
    std::vector<Tensor> out;
    {
        at::AutoDispatchBelowADInplaceOrView guard;
        out = bwd.call(dy, dh, h, x, branch, dims, rstd, weight, eps, alpha, branch_scale, skip_bias, x_dtype,
                       branch_dtype, unit_offset, mask);
    }
    AddNormSpec sp{true, unit_offset, alpha, eps, dims.vec(), x_dtype, branch_dtype};
    add_norm_backward_second_order(sp, out, std::vector<bool>(mask.begin(), mask.end()), dy, dh, h, x, branch, weight, branch_scale,
                                   skip_bias);
    return out;
}

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
    m.impl("layer_norm_backward", &layer_norm_backward_autograd);
    m.impl("rms_norm_backward", &rms_norm_backward_autograd);
    m.impl("add_layer_norm_backward", &add_layer_norm_backward_autograd);
    m.impl("add_rms_norm_backward", &add_rms_norm_backward_autograd);
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
// keel_add_layernorm_bwd, keel_add_rmsnorm_bwd, keel_layerscale_fwd, keel_layerscale_bwd,
// keel_dyt_fwd, keel_dyt_bwd, keel_batchnorm_fwd, keel_batchnorm_bwd (n of them). Returns 0, or -1
// when n is wrong.
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

// How many tensors the operators copied to or from contiguous rows (their memory was not evenly
// strided rows) since the library loaded.
__attribute__((visibility("default"))) long long keel_torch_row_copies(void)
{
    return row_copies.load(std::memory_order_relaxed);
}

}  // extern "C"
