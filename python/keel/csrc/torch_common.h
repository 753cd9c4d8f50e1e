// What keel's torch operators share (torch_ops.cpp: the norms; torch_layers.cpp: BatchNorm,
// LayerScale, DyT): the libkeel entry points and the one keel context, tensors as keel's rows,
// and the autograd pieces (backward nodes, gradients of gradients, the refusal of forward mode).
// Everything here is inline: both translation units share one api table and one context.

#pragma once

#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/library.h>

#include <pthread.h>

#include <array>
#include <atomic>
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

namespace keel_torch {

using at::Tensor;
using OptTensor = std::optional<Tensor>;
using torch::autograd::variable_list;

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
    decltype(&keel_layerscale_fwd) layerscale_fwd;
    decltype(&keel_layerscale_bwd) layerscale_bwd;
    decltype(&keel_dyt_fwd) dyt_fwd;
    decltype(&keel_dyt_bwd) dyt_bwd;
    decltype(&keel_batchnorm_fwd) batchnorm_fwd;
    decltype(&keel_batchnorm_bwd) batchnorm_bwd;
};
constexpr int kApiEntries = sizeof(Api) / sizeof(void *);

inline Api api;
inline bool bound = false;
inline keel_ctx *ctx = nullptr;
inline int ctx_threads = 0;  // what the next context is created with (<= 0: one thread per core)
inline std::mutex *ctx_mutex = new std::mutex;  // a pointer: a forked child gets a fresh one

inline void forget_context_in_child()
{
    // The parent's pool threads do not exist in a forked child: its context would hang. Leak it
    // (destroying would join those threads) and let the next call create one.
    ctx = nullptr;
    ctx_mutex = new std::mutex;
}

// Raises keel's error as the matching Python exception (ValueError for bad arguments).
[[noreturn]] inline void raise_status(keel_status st)
{
    std::string msg = api.last_error ? api.last_error() : "keel: error";
    if (st == KEEL_EINVAL || st == KEEL_ENULL || st == KEEL_EOVERFLOW)
        TORCH_CHECK_VALUE(false, msg);
    if (st == KEEL_EUNSUPPORTED)
        TORCH_CHECK_TYPE(false, msg);
    TORCH_CHECK(false, msg);
}

// Runs fn(ctx, args...) on the context, one call at a time; raises keel's error.
template <typename Fn, typename... Args> inline void call(Fn fn, Args... args)
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

inline float null_row[1];  // an address for empty tensors (keel never reads it: 0 rows)

inline keel_dtype keel_dtype_of(const Tensor &t, const char *who, const char *name)
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
inline std::string py_tuple(at::IntArrayRef dims)
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

inline Shape split(const Tensor &x, at::IntArrayRef dims, const char *who, const char *name = "x")
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
inline int64_t row_stride(const Tensor &t, size_t k, int64_t dim)
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

// How many inputs and outputs were copied to or from contiguous rows since the library loaded
// (keel_torch_row_copies: the tests check that channels_last BatchNorm input is read in place).
inline std::atomic<long long> row_copies{0};

inline Rows rows_of(const Tensor &t, const Shape &s, const char *who, const char *name)
{
    keel_dtype dt = keel_dtype_of(t, who, name);
    Tensor u = t;
    int64_t stride = reinterpret_cast<uintptr_t>(t.data_ptr()) % t.element_size() ? -1 : row_stride(t, s.k, s.dim);
    if (stride < 0) {
        row_copies.fetch_add(1, std::memory_order_relaxed);
        u = t.contiguous();
        if (reinterpret_cast<uintptr_t>(u.data_ptr()) % u.element_size())
            u = t.clone(at::MemoryFormat::Contiguous);
        stride = s.dim;
    }
    void *p = u.numel() ? u.data_ptr() : static_cast<void *>(null_row);
    return {u, keel_tensor{p, dt, static_cast<size_t>(stride)}};
}

inline Rows rows_or_none(const OptTensor &t, const Shape &s, const char *who, const char *name)
{
    if (!t || !t->defined())
        return {Tensor(), keel_none()};
    return rows_of(*t, s, who, name);
}

// A new contiguous output of `sizes` and dtype, and its keel_tensor; absent when not wanted.
inline Rows output(bool wanted, at::IntArrayRef sizes, at::ScalarType dtype, const Shape &s)
{
    if (!wanted)
        return {at::empty({0}, at::TensorOptions().dtype(dtype)), keel_none()};
    Tensor t = at::empty(sizes, at::TensorOptions().dtype(dtype));
    void *p = t.numel() ? t.data_ptr() : static_cast<void *>(null_row);
    return {t, keel_tensor{p, keel_dtype_of(t, "keel", "output"), static_cast<size_t>(s.dim)}};
}

// A per-feature vector (weight, bias, branch_scale, skip_bias) as float32 contiguous, or undefined.
inline Tensor param(const OptTensor &p, at::IntArrayRef dims, const char *who, const char *name)
{
    if (!p || !p->defined())
        return Tensor();
    TORCH_CHECK_VALUE(p->sizes() == dims, who, ": ", name, ".shape ", py_tuple(p->sizes()), " != normalized_shape ",
                      py_tuple(dims));
    TORCH_CHECK_VALUE(p->device().is_cpu(), who, ": ", name, " is on ", p->device(), ", x on the CPU");
    return p->to(at::kFloat).contiguous();
}

inline float *fptr(const Tensor &t)
{
    if (!t.defined())
        return nullptr;
    return t.numel() ? t.data_ptr<float>() : null_row;
}

// The statistics (mean, rstd): float32 of x's leading shape.
inline Tensor stat(const Shape &s)
{
    return at::empty(s.lead, at::TensorOptions().dtype(at::kFloat));
}

// A float32 parameter gradient (zeros when there are no rows: keel then writes nothing), or an
// empty placeholder when not wanted.
inline Tensor grad_param(bool wanted, at::IntArrayRef dims, const Shape &s)
{
    auto opts = at::TensorOptions().dtype(at::kFloat);
    if (!wanted)
        return at::empty({0}, opts);
    return s.rows ? at::empty(dims, opts) : at::zeros(dims, opts);
}

inline float as_eps(double eps)
{
    return static_cast<float>(eps);
}

// ---- autograd -------------------------------------------------------------------------------------
//
// Each op's Autograd kernel runs the op below autograd and, when a gradient is due, connects its
// outputs to a backward node of its own (as torch's generated autograd code does: no per-call
// bookkeeping beyond the saved tensors). The node calls the op's backward operator through the
// dispatcher, so that tracers record it.

namespace ag = torch::autograd;

template <typename Sig> inline c10::TypedOperatorHandle<Sig> op(const char *name)
{
    return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

inline Tensor or_undefined(const OptTensor &t)
{
    return t && t->defined() ? *t : Tensor();
}

inline OptTensor optional_of(const Tensor &t)
{
    return t.defined() ? OptTensor(t) : std::nullopt;
}

// A gradient computed by keel as autograd wants it: undefined when not wanted, in the dtype of the
// parameter it belongs to (keel's parameter gradients are float32).
inline Tensor grad_as(bool wanted, const Tensor &g, const Tensor &like)
{
    if (!wanted)
        return Tensor();
    return like.defined() && g.scalar_type() != like.scalar_type() ? g.to(like.scalar_type()) : g;
}

// The gradients of `outputs` with respect to `inputs` (those defined and requiring a gradient),
// differentiable: the backward of a backward computed again with torch's own ops, so that its
// gradient exists (create_graph=True). keel's first derivative is what these ops give too, up to
// float rounding; the second derivative then follows torch's formulas.
inline variable_list differentiable_grads(const variable_list &outputs, const variable_list &grad_outputs,
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

// The gradient of a keel backward operator (create_graph=True, nested torch.func.grad, gradient
// penalties). The first derivative stays keel's: the backward operator computes it with keel as
// always, and when a gradient of it is due (grad mode on and an input requiring a gradient, at
// whatever torch.func level) the operator's Autograd kernel hands its outputs to this node, which
// holds the operator's inputs and `first`, the same backward written in torch's differentiable
// ops; its apply differentiates `first` again (a vector-Jacobian product of the first derivative).
struct RecomputedBackward : ag::Node {
    std::vector<ag::SavedVariable> saved;                       // the first backward's inputs
    std::function<variable_list(const variable_list &)> first;  // its outputs from them
    std::vector<size_t> which;  // the outputs of `first` this node's inputs (the gradients) belong to

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
        // Partial derivatives with respect to each input: every input enters `first` through a node
        // of its own (a fresh leaf; with create, an alias whose graph leads back to the input, so
        // that the result is differentiable in turn), so that a path from one input through its
        // history to another (dy depends on x) is not counted twice: that path is the engine's to
        // follow, through the edges of this node.
        variable_list leaves(in.size());
        for (size_t i = 0; i < in.size(); i++)
            if (in[i].defined())
                leaves[i] = create && in[i].requires_grad() ? in[i].view_as(in[i]) : in[i].detach().requires_grad_(true);
        variable_list outs;
        {
            at::AutoGradMode on(true);
            outs = first(leaves);
        }
        variable_list o, go, ins, result(in.size());
        for (size_t j = 0; j < which.size() && j < grads.size(); j++) {
            const Tensor &out = which[j] < outs.size() ? outs[which[j]] : Tensor();
            if (grads[j].defined() && out.defined() && out.requires_grad()) {
                o.push_back(out);
                go.push_back(grads[j].to(out.scalar_type()));
            }
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

// Makes `outputs` (a keel backward operator's results; undefined: not asked for) differentiable
// with respect to `inputs` (that operator's differentiable inputs) through a RecomputedBackward,
// when any input requires a gradient. first(inputs) gives the outputs in the same order.
inline void attach_second_order(const variable_list &outputs, const variable_list &inputs,
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
    for (size_t j = 0; j < outputs.size(); j++)
        if (outputs[j].defined()) {  // undefined: an output not asked for
            node->which.push_back(j);
            ag::set_history(outputs[j], node);
        }
}

// Forward-mode AD (torch.func.jvp, jacfwd, hessian, torch.autograd.forward_ad) has no formula
// here: refused, never a silent zero tangent.
inline void refuse_forward_ad(const char *who, std::initializer_list<Tensor> inputs)
{
    for (const Tensor &t : inputs)
        TORCH_CHECK(!ag::isFwGradDefined(t), who,
                    ": forward-mode automatic differentiation (torch.func.jvp, jacfwd, hessian, forward_ad) is not "
                    "supported by keel's operators; use reverse mode (backward, torch.func.grad, jacrev), or "
                    "torch's own op for this computation");
}

// The outputs of a backward operator that were asked for (the others undefined).
template <size_t N> inline variable_list wanted(variable_list outs, const std::array<bool, N> &mask)
{
    for (size_t i = 0; i < N && i < outs.size(); i++)
        if (!mask[i])
            outs[i] = Tensor();
    return outs;
}

// A zero leaf standing for a parameter a backward operator does not take (LayerNorm's bias: its
// gradient, the sum of dy, is still one of the operator's outputs).
inline Tensor zero_leaf(bool wanted, at::IntArrayRef dims, const Tensor &like)
{
    return wanted ? at::zeros(dims, like.options()).requires_grad_(true) : Tensor();
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


}  // namespace keel_torch
