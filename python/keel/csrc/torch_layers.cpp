// keel's BatchNorm, LayerScale and DyT as PyTorch operators (torch.ops.keel.batch_norm,
// layer_scale, dyt and their backwards), registered with the dispatcher as the norms are
// (torch_ops.cpp): a CPU kernel that calls keel, an Autograd kernel that connects the outputs to a
// backward node of the op's own, fake kernels and vmap rules in python/keel/torch_layers.py.
//
// What the CPU kernels take: BatchNorm float32; LayerScale and DyT float32, bfloat16 and float16
// storage (computed in float32, each output rounded once; the per-feature vectors go to keel as
// float32 and their gradients come back in their own dtype). Anything else is refused here:
// python/keel/torch_layers.py sends it to torch's computation and says so.
//
// batch_norm updates running_mean, running_var and num_batches_tracked in place (the schema marks
// them mutated, so functionalization keeps the updates), and its ADInplaceOrView kernel bumps
// their version counters as torch's in-place ops do. x is (N, C, ...), read as rows of C
// features: channels-last memory (NHWC) is read and written in place, NCHW through a copy.

#include "torch_common.h"

#include <ATen/ops/batch_norm.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/rsqrt.h>
#include <ATen/ops/tanh.h>

#include <cmath>
#include <limits>

using namespace keel_torch;

namespace {

// The dtype torch's own formula gives: x's promoted with each other tensor's (a 0-dim tensor
// does not raise a floating x's precision, as in torch's type promotion).
at::ScalarType result_dtype(const Tensor &x, std::initializer_list<Tensor> others)
{
    at::ScalarType dtype = x.scalar_type();
    for (const Tensor &t : others)
        if (t.defined() && (t.dim() > 0 || !at::isFloatingType(dtype)))
            dtype = at::promote_types(dtype, t.scalar_type());
    return dtype;
}

void check_cpu(const Tensor &t, const char *who, const char *name)
{
    if (t.defined())
        TORCH_CHECK_VALUE(t.device().is_cpu(), who, ": ", name, " is on ", t.device(), ", keel computes on the CPU");
}

// An output's rows: t's own when they are evenly strided and aligned, else a contiguous staging
// tensor that finish() copies into t.
struct OutRows {
    Tensor t, staging;
    keel_tensor kt;

    void finish()
    {
        if (staging.defined())
            t.copy_(staging);
    }
};

OutRows out_rows(const Tensor &t, const Shape &s, const char *who)
{
    keel_dtype dt = keel_dtype_of(t, who, "output");
    int64_t stride = reinterpret_cast<uintptr_t>(t.data_ptr()) % t.element_size() ? -1 : row_stride(t, s.k, s.dim);
    Tensor staging;
    void *p = t.numel() ? t.data_ptr() : static_cast<void *>(null_row);
    if (stride < 0) {
        row_copies.fetch_add(1, std::memory_order_relaxed);
        staging = at::empty(t.sizes(), t.options().memory_format(at::MemoryFormat::Contiguous));
        p = staging.numel() ? staging.data_ptr() : static_cast<void *>(null_row);
        stride = s.dim;
    }
    return {t, staging, keel_tensor{p, dt, static_cast<size_t>(stride)}};
}

// A gradient keel sums into (float32 zeros of `sizes`), or an empty placeholder when not wanted.
Tensor summed_grad(bool wanted, at::IntArrayRef sizes, at::ScalarType absent_dtype)
{
    if (!wanted)
        return at::empty({0}, at::TensorOptions().dtype(absent_dtype));
    return at::zeros(sizes, at::TensorOptions().dtype(at::kFloat));
}

// ==== LayerScale: h = x + gamma * f =================================================================

const char *const kLayerScale = "keel::layer_scale";

Shape layer_scale_shape(const Tensor &x, const Tensor &f, const Tensor &gamma, const char *who)
{
    TORCH_CHECK_VALUE(f.sizes() == x.sizes(), who, ": f.shape ", py_tuple(f.sizes()), " != x.shape ",
                      py_tuple(x.sizes()));
    for (const Tensor *t : {&x, &f, &gamma})
        check_cpu(*t, who, t == &x ? "x" : t == &f ? "f" : "gamma");
    return split(x, gamma.sizes(), who);
}

Tensor layer_scale_cpu(const Tensor &x, const Tensor &f, const Tensor &gamma)
{
    Shape s = layer_scale_shape(x, f, gamma, kLayerScale);
    Rows rx = rows_of(x, s, kLayerScale, "x"), rf = rows_of(f, s, kLayerScale, "f");
    Tensor g = param(gamma, gamma.sizes(), kLayerScale, "gamma");
    Rows rh = output(true, x.sizes(), result_dtype(x, {f, gamma}), s);
    if (s.rows && s.dim)
        call(api.layerscale_fwd, static_cast<size_t>(s.rows), static_cast<size_t>(s.dim), rx.kt, rf.kt, fptr(g),
             rh.kt, 0u);
    return rh.keep;
}

// (df, dgamma): gamma * dh in f's dtype, the sum over rows of dh * f in gamma's dtype (dx is dh
// itself: the autograd node passes it on).
std::tuple<Tensor, Tensor> layer_scale_backward_cpu(const Tensor &dh, const Tensor &f, const Tensor &gamma,
                                                    std::array<bool, 2> mask)
{
    const char *who = "keel::layer_scale_backward";
    Shape s = layer_scale_shape(dh, f, gamma, who);
    Rows rdh = rows_of(dh, s, who, "dh"), rf = rows_of(f, s, who, "f");
    Tensor g = param(gamma, gamma.sizes(), who, "gamma");
    Rows rdf = output(mask[0], f.sizes(), f.scalar_type(), s);
    Tensor dgamma = summed_grad(mask[1], gamma.sizes(), gamma.scalar_type());
    if (s.rows && s.dim && (mask[0] || mask[1]))
        call(api.layerscale_bwd, static_cast<size_t>(s.rows), static_cast<size_t>(s.dim), rdh.kt, rf.kt, fptr(g),
             keel_none(), rdf.kt, mask[1] ? fptr(dgamma) : nullptr, 0u);
    return {rdf.keep, dgamma.to(gamma.scalar_type())};
}

// Inputs (x, f, gamma); saved f (when gamma needs its gradient) and gamma.
struct LayerScaleBackward : KeelBackward {
    at::ScalarType x_dtype = at::kFloat;

    std::string name() const override
    {
        return "keel::LayerScaleBackward";
    }

    variable_list apply(variable_list &&grads) override
    {
        auto v = unpack();
        const Tensor &dh = grads[0], &gamma = v[1];
        const Tensor &f = v[0].defined() ? v[0] : dh;  // f is read only for dgamma: not kept without it
        if (!dh.defined())
            return variable_list(3);
        std::array<bool, 2> need{should_compute_output(1), should_compute_output(2)};
        Tensor dx = should_compute_output(0) ? dh.to(x_dtype) : Tensor();  // h = x + ...: dx is dh
        if (!need[0] && !need[1])
            return {dx, Tensor(), Tensor()};
        using Sig = TwoTensors(const Tensor &, const Tensor &, const Tensor &, std::array<bool, 2>);
        static auto bwd = op<Sig>("keel::layer_scale_backward");
        auto [df, dgamma] = bwd.call(dh, f, gamma, need);  // through autograd: see layer_scale_backward_autograd
        return {dx, grad_as(need[0], df, Tensor()), grad_as(need[1], dgamma, Tensor())};
    }
};

// keel::layer_scale_backward's Autograd kernel (gradients of gradients: see RecomputedBackward).
TwoTensors layer_scale_backward_autograd(const Tensor &dh, const Tensor &f, const Tensor &gamma,
                                         std::array<bool, 2> mask)
{
    using Sig = TwoTensors(const Tensor &, const Tensor &, const Tensor &, std::array<bool, 2>);
    static auto bwd = op<Sig>("keel::layer_scale_backward");
    TwoTensors out;
    {
        at::AutoDispatchBelowADInplaceOrView guard;
        out = bwd.call(dh, f, gamma, mask);
    }
    if (ag::compute_requires_grad(dh, f, gamma))
        attach_second_order(wanted<2>({std::get<0>(out), std::get<1>(out)}, mask), {dh, f, gamma},
                            [](const variable_list &in) {
                                const Tensor &dh_ = in[0], &f_ = in[1], &gamma_ = in[2];
                                std::vector<int64_t> lead(static_cast<size_t>(dh_.dim() - gamma_.dim()));
                                for (size_t i = 0; i < lead.size(); i++)
                                    lead[i] = static_cast<int64_t>(i);
                                return variable_list{(dh_ * gamma_).to(f_.scalar_type()), (dh_ * f_).sum(lead)};
                            });
    return out;
}

Tensor layer_scale_autograd(const Tensor &x, const Tensor &f, const Tensor &gamma)
{
    using Sig = Tensor(const Tensor &, const Tensor &, const Tensor &);
    static auto fwd = op<Sig>(kLayerScale);
    refuse_forward_ad(kLayerScale, {x, f, gamma});
    Tensor h;
    {
        at::AutoDispatchBelowADInplaceOrView guard;
        h = fwd.call(x, f, gamma);
    }
    if (ag::compute_requires_grad(x, f, gamma)) {
        auto node = c10::make_intrusive<LayerScaleBackward>();
        node->set_next_edges(ag::collect_next_edges(x, f, gamma));
        node->save(gamma.requires_grad() ? f : Tensor());
        node->save(gamma);
        node->x_dtype = x.scalar_type();
        ag::set_history(h, node);
    }
    return h;
}

// ==== DyT: y = weight * tanh(alpha * x) + bias ======================================================

const char *const kDyT = "keel::dyt";

float alpha_of(const Tensor &alpha, const char *who)
{
    TORCH_CHECK_VALUE(alpha.numel() == 1, who, ": alpha has ", alpha.numel(), " values (one expected)");
    check_cpu(alpha, who, "alpha");
    return static_cast<float>(alpha.item<double>());
}

Tensor dyt_cpu(const Tensor &x, at::IntArrayRef dims, const Tensor &alpha, const OptTensor &weight,
               const OptTensor &bias)
{
    Shape s = split(x, dims, kDyT);
    check_cpu(x, kDyT, "x");
    float a = alpha_of(alpha, kDyT);
    Tensor w = param(weight, dims, kDyT, "weight"), b = param(bias, dims, kDyT, "bias");
    Rows rx = rows_of(x, s, kDyT, "x");
    Rows ry = output(true, x.sizes(), result_dtype(x, {alpha, or_undefined(weight), or_undefined(bias)}), s);
    if (s.rows && s.dim)
        call(api.dyt_fwd, static_cast<size_t>(s.rows), static_cast<size_t>(s.dim), rx.kt, ry.kt, a, fptr(w), fptr(b),
             0u);
    return ry.keep;
}

// dweight's and dbias's dtype: weight's, or y's without a weight.
at::ScalarType dyt_grad_dtype(const Tensor &x, const Tensor &alpha, const Tensor &weight)
{
    return weight.defined() ? weight.scalar_type() : result_dtype(x, {alpha});
}

// (dx, dalpha, dweight, dbias): keel.h's keel_dyt_bwd; dalpha in alpha's shape and dtype.
std::tuple<Tensor, Tensor, Tensor, Tensor> dyt_backward_cpu(const Tensor &dy, const Tensor &x, at::IntArrayRef dims,
                                                            const Tensor &alpha, const OptTensor &weight,
                                                            std::array<bool, 4> mask)
{
    const char *who = "keel::dyt_backward";
    Shape s = split(x, dims, who);
    TORCH_CHECK_VALUE(dy.sizes() == x.sizes(), who, ": dy.shape ", py_tuple(dy.sizes()), " != x.shape ",
                      py_tuple(x.sizes()));
    check_cpu(x, who, "x");
    check_cpu(dy, who, "dy");
    float a = alpha_of(alpha, who);
    Tensor w = param(weight, dims, who, "weight");
    at::ScalarType pdtype = dyt_grad_dtype(x, alpha, or_undefined(weight));
    Rows rdy = rows_of(dy, s, who, "dy"), rx = rows_of(x, s, who, "x");
    Rows rdx = output(mask[0], x.sizes(), x.scalar_type(), s);
    Tensor dalpha = summed_grad(mask[1], {1}, alpha.scalar_type());
    Tensor dw = summed_grad(mask[2], dims, pdtype), db = summed_grad(mask[3], dims, pdtype);
    if (s.rows && s.dim && (mask[0] || mask[1] || mask[2] || mask[3]))
        call(api.dyt_bwd, static_cast<size_t>(s.rows), static_cast<size_t>(s.dim), rdy.kt, rx.kt, a, fptr(w), rdx.kt,
             mask[1] ? fptr(dalpha) : nullptr, mask[2] ? fptr(dw) : nullptr, mask[3] ? fptr(db) : nullptr, 0u);
    if (mask[1])
        dalpha = dalpha.reshape(alpha.sizes()).to(alpha.scalar_type());
    return {rdx.keep, dalpha, dw.to(pdtype), db.to(pdtype)};
}

// The DyT backward in torch's differentiable ops (the create_graph path), from (dy, x, alpha,
// weight) to (dx, dalpha, dweight, dbias).
variable_list dyt_first_backward(const variable_list &in, size_t k)
{
    const Tensor &dy = in[0], &x = in[1], &alpha = in[2], &w = in[3];
    std::vector<int64_t> lead(static_cast<size_t>(x.dim()) - k);
    for (size_t i = 0; i < lead.size(); i++)
        lead[i] = static_cast<int64_t>(i);
    Tensor t = at::tanh(alpha * x);
    Tensor sech2 = 1 - t * t;
    Tensor g = w.defined() ? dy * w : dy;
    return {(g * alpha * sech2).to(x.scalar_type()), (g * x * sech2).sum().reshape(alpha.sizes()),
            (dy * t).sum(lead), dy.sum(lead)};
}

// Inputs (x, alpha, weight, bias); saved x, alpha, weight.
struct DyTBackward : KeelBackward {
    bool has_bias = false;

    std::string name() const override
    {
        return "keel::DyTBackward";
    }

    variable_list apply(variable_list &&grads) override
    {
        auto v = unpack();
        const Tensor &dy = grads[0], &x = v[0], &alpha = v[1], &w = v[2];
        if (!dy.defined())
            return variable_list(4);
        std::array<bool, 4> need{should_compute_output(0), should_compute_output(1),
                                 should_compute_output(2) && w.defined(), should_compute_output(3) && has_bias};
        using Sig = FourTensors(const Tensor &, const Tensor &, at::IntArrayRef, const Tensor &, const OptTensor &,
                                std::array<bool, 4>);
        static auto bwd = op<Sig>("keel::dyt_backward");
        auto [dx, dalpha, dw, db] = bwd.call(dy, x, dims, alpha, optional_of(w), need);  // through autograd
        return {grad_as(need[0], dx, Tensor()), grad_as(need[1], dalpha, alpha), grad_as(need[2], dw, w),
                grad_as(need[3], db, Tensor())};
    }
};

// keel::dyt_backward's Autograd kernel (gradients of gradients: see RecomputedBackward).
FourTensors dyt_backward_autograd(const Tensor &dy, const Tensor &x, at::IntArrayRef dims, const Tensor &alpha,
                                  const OptTensor &weight, std::array<bool, 4> mask)
{
    using Sig = FourTensors(const Tensor &, const Tensor &, at::IntArrayRef, const Tensor &, const OptTensor &,
                            std::array<bool, 4>);
    static auto bwd = op<Sig>("keel::dyt_backward");
    FourTensors out;
    {
        at::AutoDispatchBelowADInplaceOrView guard;
        out = bwd.call(dy, x, dims, alpha, weight, mask);
    }
    Tensor w = or_undefined(weight);
    if (ag::compute_requires_grad(dy, x, alpha, w))
        attach_second_order(
            wanted<4>({std::get<0>(out), std::get<1>(out), std::get<2>(out), std::get<3>(out)}, mask),
            {dy, x, alpha, w}, [k = dims.size()](const variable_list &in) { return dyt_first_backward(in, k); });
    return out;
}

Tensor dyt_autograd(const Tensor &x, at::IntArrayRef dims, const Tensor &alpha, const OptTensor &weight,
                    const OptTensor &bias)
{
    using Sig = Tensor(const Tensor &, at::IntArrayRef, const Tensor &, const OptTensor &, const OptTensor &);
    static auto fwd = op<Sig>(kDyT);
    Tensor w = or_undefined(weight), b = or_undefined(bias), y;
    refuse_forward_ad(kDyT, {x, alpha, w, b});
    {
        at::AutoDispatchBelowADInplaceOrView guard;
        y = fwd.call(x, dims, alpha, weight, bias);
    }
    if (ag::compute_requires_grad(x, alpha, w, b)) {
        auto node = c10::make_intrusive<DyTBackward>();
        node->set_next_edges(ag::collect_next_edges(x, alpha, w, b));
        for (const Tensor &t : {x, alpha, w})
            node->save(t);
        node->dims = dims.vec();
        node->has_bias = b.defined();
        ag::set_history(y, node);
    }
    return y;
}

// ==== BatchNorm ======================================================================================

const char *const kBatchNorm = "keel::batch_norm";
using BatchNormOut = ThreeTensors;

// Values per channel of a batch_norm input: N * H * W ... (torch's count).
int64_t values_per_channel(const Tensor &x)
{
    if (x.dim() == 0)
        return 1;
    int64_t n = x.size(0);
    for (int64_t i = 2; i < x.dim(); i++)
        n *= x.size(i);
    return n;
}

// The checks keel.torch_layers' fake kernel makes too (the same words).
void batch_norm_check(const Tensor &x, const OptTensor &weight, const OptTensor &bias, const OptTensor &running_mean,
                      const OptTensor &running_var, const OptTensor &num_batches_tracked, bool training,
                      std::optional<double> momentum)
{
    TORCH_CHECK_VALUE(x.dim() >= 2, kBatchNorm, ": x.shape ", py_tuple(x.sizes()), ": expected (N, C, ...)");
    int64_t rows = values_per_channel(x), C = x.size(1);
    TORCH_CHECK_VALUE(!training || rows >= 2, kBatchNorm, ": training needs at least 2 values per channel; x.shape ",
                      py_tuple(x.sizes()), " gives ", rows, " (N * H * W ...): ",
                      rows == 0 ? "an empty batch has no statistics" : "a batch of one has no variance");
    const OptTensor *vectors[] = {&weight, &bias, &running_mean, &running_var};
    const char *names[] = {"weight", "bias", "running_mean", "running_var"};
    for (int i = 0; i < 4; i++)
        if (*vectors[i] && vectors[i]->has_value() && (*vectors[i])->defined())
            TORCH_CHECK_VALUE((*vectors[i])->sizes() == at::IntArrayRef{C}, kBatchNorm, ": ", names[i], ".shape ",
                              py_tuple((*vectors[i])->sizes()), " != (", C, ",)");
    bool has_mean = running_mean && running_mean->defined(), has_var = running_var && running_var->defined();
    TORCH_CHECK_VALUE(has_mean == has_var, kBatchNorm, ": running_mean and running_var must be given both or neither");
    TORCH_CHECK_VALUE(training || has_mean, kBatchNorm,
                      ": inference (training=False) needs running_mean and running_var");
    bool has_count = num_batches_tracked && num_batches_tracked->defined();
    TORCH_CHECK_VALUE(!training || !has_mean || momentum || has_count, kBatchNorm,
                      ": momentum None (the cumulative average) needs num_batches_tracked");
}

// What keel computes of batch_norm, beyond the checks above: float32 CPU tensors, C > 0,
// momentum in [0, 1], an int64 CPU num_batches_tracked (keel.torch_layers sends the rest to
// torch's computation).
void batch_norm_refuse_others(const Tensor &x, std::initializer_list<Tensor> vectors, const Tensor &count,
                              bool tracking, std::optional<double> momentum)
{
    TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat, kBatchNorm, ": x has dtype ", x.scalar_type(),
                     "; keel computes BatchNorm in float32 (keel.torch_layers sends other dtypes to torch)");
    check_cpu(x, kBatchNorm, "x");
    for (const Tensor &t : vectors)
        if (t.defined()) {
            TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat, kBatchNorm,
                             ": the per-channel tensors must be float32, one has ", t.scalar_type());
            check_cpu(t, kBatchNorm, "a per-channel tensor");
        }
    if (count.defined()) {
        TORCH_CHECK_TYPE(count.scalar_type() == at::kLong, kBatchNorm, ": num_batches_tracked must be int64");
        check_cpu(count, kBatchNorm, "num_batches_tracked");
    }
    TORCH_CHECK_VALUE(x.size(1) > 0, kBatchNorm, ": no channels (C == 0)");
    TORCH_CHECK_VALUE(!tracking || !momentum || (*momentum >= 0.0 && *momentum <= 1.0), kBatchNorm, ": momentum ",
                      *momentum, " outside [0, 1]");
}

// t as a dense tensor keel may update in place (itself, or a copy copied back by the caller).
Tensor dense(const Tensor &t)
{
    return !t.defined() || t.is_contiguous() ? t : t.contiguous();
}

BatchNormOut batch_norm_cpu(const Tensor &x, const OptTensor &weight, const OptTensor &bias,
                            const OptTensor &running_mean, const OptTensor &running_var,
                            const OptTensor &num_batches_tracked, bool training, std::optional<double> momentum,
                            double eps)
{
    batch_norm_check(x, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum);
    Tensor rm = or_undefined(running_mean), rv = or_undefined(running_var), count = or_undefined(num_batches_tracked);
    bool tracking = training && rm.defined();
    batch_norm_refuse_others(x, {or_undefined(weight), or_undefined(bias), rm, rv}, count, tracking, momentum);
    int64_t C = x.size(1), rows = values_per_channel(x);
    auto f32 = at::TensorOptions().dtype(at::kFloat);
    Tensor y = at::empty_like(x), mean = at::empty({C}, f32), rstd = at::empty({C}, f32);
    if (rows == 0) {  // inference on an empty batch: keel writes nothing; the statistics are the running ones
        mean.copy_(rm);
        rstd.copy_(at::rsqrt(rv + eps));
        return {y, mean, rstd};
    }
    Shape s;
    s.k = 1;
    s.rows = rows;
    s.dim = C;
    Rows rx = rows_of(x.movedim(1, -1), s, kBatchNorm, "x");
    OutRows ry = out_rows(y.movedim(1, -1), s, kBatchNorm);
    Tensor w = param(weight, {C}, kBatchNorm, "weight"), b = param(bias, {C}, kBatchNorm, "bias");
    Tensor drm = dense(rm), drv = dense(rv), dcount = dense(count);
    float m = tracking ? (momentum ? static_cast<float>(*momentum) : std::numeric_limits<float>::quiet_NaN()) : 0.0f;
    call(api.batchnorm_fwd, static_cast<size_t>(rows), static_cast<size_t>(C), rx.kt, ry.kt, fptr(w), fptr(b),
         as_eps(eps), training ? 1 : 0, m, fptr(drm), fptr(drv), dcount.defined() ? dcount.data_ptr<int64_t>() : nullptr,
         fptr(mean), fptr(rstd), 0u);
    ry.finish();
    for (auto [t, d] : {std::pair{rm, drm}, std::pair{rv, drv}, std::pair{count, dcount}})
        if (t.defined() && !d.is_same(t))
            t.copy_(d);
    return {y, mean, rstd};
}

// (dx, dweight, dbias) of batch_norm; training: through the batch statistics.
ThreeTensors batch_norm_backward_cpu(const Tensor &dy, const Tensor &x, const OptTensor &weight, const Tensor &mean,
                                     const Tensor &rstd, bool training, double eps, std::array<bool, 3> mask)
{
    const char *who = "keel::batch_norm_backward";
    TORCH_CHECK_VALUE(x.dim() >= 2 && dy.sizes() == x.sizes(), who, ": dy.shape ", py_tuple(dy.sizes()),
                      " and x.shape ", py_tuple(x.sizes()), ": expected both (N, C, ...)");
    batch_norm_refuse_others(x, {or_undefined(weight), mean, rstd}, Tensor(), false, std::nullopt);
    TORCH_CHECK_TYPE(dy.scalar_type() == at::kFloat, who, ": dy has dtype ", dy.scalar_type(), "; keel computes float32");
    int64_t C = x.size(1), rows = values_per_channel(x);
    auto f32 = at::TensorOptions().dtype(at::kFloat);
    Tensor dx = mask[0] ? at::empty_like(x) : at::empty({0}, f32);
    Tensor dw = summed_grad(mask[1], {C}, at::kFloat), db = summed_grad(mask[2], {C}, at::kFloat);
    if (rows == 0 || !(mask[0] || mask[1] || mask[2]))
        return {dx, dw, db};
    Shape s;
    s.k = 1;
    s.rows = rows;
    s.dim = C;
    Rows rdy = rows_of(dy.movedim(1, -1), s, who, "dy"), rx = rows_of(x.movedim(1, -1), s, who, "x");
    OutRows rdx = mask[0] ? out_rows(dx.movedim(1, -1), s, who) : OutRows{Tensor(), Tensor(), keel_none()};
    Tensor w = param(weight, {C}, who, "weight"), m = mean.contiguous(), r = rstd.contiguous();
    call(api.batchnorm_bwd, static_cast<size_t>(rows), static_cast<size_t>(C), rdy.kt, rx.kt, fptr(m), fptr(r),
         fptr(w), as_eps(eps), training ? 1 : 0, rdx.kt, mask[1] ? fptr(dw) : nullptr, mask[2] ? fptr(db) : nullptr, 0u);
    if (mask[0])
        rdx.finish();
    return {dx, dw, db};
}

// Inputs (x, weight, bias); saved x, weight, bias, save_mean, save_rstd.
struct BatchNormBackward : KeelBackward {
    bool training = true;

    std::string name() const override
    {
        return "keel::BatchNormBackward";
    }

    variable_list apply(variable_list &&grads) override
    {
        auto v = unpack();
        const Tensor &dy = grads[0], &x = v[0], &w = v[1], &b = v[2], &mean = v[3], &rstd = v[4];
        if (!dy.defined())
            return variable_list(3);
        std::array<bool, 3> need{should_compute_output(0), should_compute_output(1) && w.defined(),
                                 should_compute_output(2)};
        using Sig = ThreeTensors(const Tensor &, const Tensor &, const OptTensor &, const Tensor &, const Tensor &,
                                 bool, double, std::array<bool, 3>);
        static auto bwd = op<Sig>("keel::batch_norm_backward");
        auto [dx, dw, db] = bwd.call(dy, x, optional_of(w), mean, rstd, training, eps, need);  // through autograd
        return {grad_as(need[0], dx, Tensor()), grad_as(need[1], dw, w), grad_as(need[2], db, b)};
    }
};

// keel::batch_norm_backward's Autograd kernel (gradients of gradients: see RecomputedBackward):
// in training the batch statistics are recomputed from x, in inference they are constants.
ThreeTensors batch_norm_backward_autograd(const Tensor &dy, const Tensor &x, const OptTensor &weight,
                                          const Tensor &mean, const Tensor &rstd, bool training, double eps,
                                          std::array<bool, 3> mask)
{
    using Sig = ThreeTensors(const Tensor &, const Tensor &, const OptTensor &, const Tensor &, const Tensor &, bool,
                             double, std::array<bool, 3>);
    static auto bwd = op<Sig>("keel::batch_norm_backward");
    ThreeTensors out;
    {
        at::AutoDispatchBelowADInplaceOrView guard;
        out = bwd.call(dy, x, weight, mean, rstd, training, eps, mask);
    }
    Tensor w = or_undefined(weight);
    if (!ag::compute_requires_grad(dy, x, w))
        return out;
    attach_second_order(
        wanted<3>({std::get<0>(out), std::get<1>(out), std::get<2>(out)}, mask), {dy, x, w},
        [training, eps, mask, mean = mean.detach(), rstd = rstd.detach()](const variable_list &in) {
            const Tensor &x_ = in[1], &w_ = in[2];
            int64_t C = x_.size(1);
            Tensor b = zero_leaf(mask[2], {C}, in[1]);
            std::vector<int64_t> shape(static_cast<size_t>(x_.dim()), 1), dims;
            shape[1] = -1;
            for (int64_t i = 0; i < x_.dim(); i++)
                if (i != 1)
                    dims.push_back(i);
            Tensor xhat;
            if (training) {  // the batch statistics, recomputed from x
                Tensor m = x_.mean(dims, true);
                Tensor var = (x_ - m).pow(2).mean(dims, true);
                xhat = (x_ - m) * (var + eps).rsqrt();
            } else {
                xhat = (x_ - mean.view(shape)) * rstd.view(shape);
            }
            Tensor y = w_.defined() ? xhat * w_.view(shape) : xhat;
            if (b.defined())
                y = y + b.view(shape);
            return differentiable_grads({y}, {in[0]}, {x_, w_, b});
        });
    return out;
}

BatchNormOut batch_norm_autograd(const Tensor &x, const OptTensor &weight, const OptTensor &bias,
                                 const OptTensor &running_mean, const OptTensor &running_var,
                                 const OptTensor &num_batches_tracked, bool training, std::optional<double> momentum,
                                 double eps)
{
    using Sig = BatchNormOut(const Tensor &, const OptTensor &, const OptTensor &, const OptTensor &,
                             const OptTensor &, const OptTensor &, bool, std::optional<double>, double);
    static auto fwd = op<Sig>(kBatchNorm);
    for (const OptTensor *t : {&running_mean, &running_var, &num_batches_tracked})
        TORCH_CHECK_VALUE(!*t || !(*t)->defined() || !(*t)->requires_grad(), kBatchNorm,
                          ": the running statistics are updated in place: they cannot require grad");
    Tensor w = or_undefined(weight), b = or_undefined(bias), y, mean, rstd;
    refuse_forward_ad(kBatchNorm, {x, w, b});
    {
        at::AutoDispatchBelowAutograd guard;  // ADInplaceOrView still runs: the running statistics change
        std::tie(y, mean, rstd) =
            fwd.call(x, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum, eps);
    }
    if (ag::compute_requires_grad(x, w, b)) {
        auto node = c10::make_intrusive<BatchNormBackward>();
        node->set_next_edges(ag::collect_next_edges(x, w, b));
        for (const Tensor &t : {x, w, b, mean, rstd})
            node->save(t);
        node->eps = eps;
        node->training = training;
        ag::set_history(y, node);
    }
    return {y, mean, rstd};
}

// ADInplaceOrView: the running statistics change in place; bump their version counters (as
// torch's in-place ops do) so that autograd refuses a stale saved copy.
BatchNormOut batch_norm_inplace_or_view(c10::DispatchKeySet ks, const Tensor &x, const OptTensor &weight,
                                        const OptTensor &bias, const OptTensor &running_mean,
                                        const OptTensor &running_var, const OptTensor &num_batches_tracked,
                                        bool training, std::optional<double> momentum, double eps)
{
    using Sig = BatchNormOut(const Tensor &, const OptTensor &, const OptTensor &, const OptTensor &,
                             const OptTensor &, const OptTensor &, bool, std::optional<double>, double);
    static auto fwd = op<Sig>(kBatchNorm);
    BatchNormOut out;
    {
        at::AutoDispatchBelowADInplaceOrView guard;
        out = fwd.redispatch(ks & c10::after_ADInplaceOrView_keyset, x, weight, bias, running_mean, running_var,
                             num_batches_tracked, training, momentum, eps);
    }
    for (const OptTensor *t : {&running_mean, &running_var, &num_batches_tracked})
        if (*t && (*t)->defined() && !(*t)->is_inference())
            (*t)->unsafeGetTensorImpl()->bump_version();
    return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(keel, m)
{
    m.def("batch_norm(Tensor x, Tensor? weight, Tensor? bias, Tensor(a!)? running_mean, Tensor(b!)? running_var,"
          " Tensor(c!)? num_batches_tracked, bool training, float? momentum, float eps)"
          " -> (Tensor y, Tensor save_mean, Tensor save_rstd)",
          {at::Tag::pt2_compliant_tag});
    m.def("batch_norm_backward(Tensor dy, Tensor x, Tensor? weight, Tensor save_mean, Tensor save_rstd,"
          " bool training, float eps, bool[3] output_mask) -> (Tensor, Tensor, Tensor)",
          {at::Tag::pt2_compliant_tag});
    m.def("layer_scale(Tensor x, Tensor f, Tensor gamma) -> Tensor", {at::Tag::pt2_compliant_tag});
    m.def("layer_scale_backward(Tensor dh, Tensor f, Tensor gamma, bool[2] output_mask) -> (Tensor, Tensor)",
          {at::Tag::pt2_compliant_tag});
    m.def("dyt(Tensor x, int[] normalized_shape, Tensor alpha, Tensor? weight, Tensor? bias) -> Tensor",
          {at::Tag::pt2_compliant_tag});
    m.def("dyt_backward(Tensor dy, Tensor x, int[] normalized_shape, Tensor alpha, Tensor? weight,"
          " bool[4] output_mask) -> (Tensor, Tensor, Tensor, Tensor)",
          {at::Tag::pt2_compliant_tag});
}

TORCH_LIBRARY_IMPL(keel, CPU, m)
{
    m.impl("batch_norm", &batch_norm_cpu);
    m.impl("batch_norm_backward", &batch_norm_backward_cpu);
    m.impl("layer_scale", &layer_scale_cpu);
    m.impl("layer_scale_backward", &layer_scale_backward_cpu);
    m.impl("dyt", &dyt_cpu);
    m.impl("dyt_backward", &dyt_backward_cpu);
}

TORCH_LIBRARY_IMPL(keel, Autograd, m)
{
    m.impl("batch_norm", &batch_norm_autograd);
    m.impl("layer_scale", &layer_scale_autograd);
    m.impl("dyt", &dyt_autograd);
    m.impl("batch_norm_backward", &batch_norm_backward_autograd);
    m.impl("layer_scale_backward", &layer_scale_backward_autograd);
    m.impl("dyt_backward", &dyt_backward_autograd);
}

TORCH_LIBRARY_IMPL(keel, ADInplaceOrView, m)
{
    m.impl("batch_norm", &batch_norm_inplace_or_view);
}
