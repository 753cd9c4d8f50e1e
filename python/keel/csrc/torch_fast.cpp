// The eager entry of keel.torch's functions: keel_torch_ops.layer_norm(...) and friends (the
// norms, the fused add + norm, layer_scale, dyt, batch_norm), CPython functions that take the Python arguments as they come, check what keel computes, and
// call keel's torch operator through the dispatcher (so autograd, torch.func and dispatch modes
// see the same operator as through torch.ops.keel). They cost what a call of one of torch's own
// functions costs: the generic path of torch.ops (argument matching against the schema in
// Python) costs several microseconds more, a third of a small call.
//
// Each returns None where keel.torch must take its other path: an input that is not a plain
// tensor (a subclass with __torch_function__, a fake tensor), a torch function mode in force, or
// a dtype or device keel does not compute (keel.torch then sends the call to torch's op and says
// so). Under torch.compile keel.torch calls torch.ops.keel directly (Dynamo traces that).

#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>

#include <optional>
#include <tuple>
#include <vector>

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

// A plain tensor argument (torch.Tensor or nn.Parameter exactly); false for anything else.
bool plain_tensor(PyObject *o, Tensor &out)
{
    if (!THPVariable_CheckExact(o))
        return false;
    out = THPVariable_Unpack(o);
    return true;
}

// An optional plain tensor: None, or a plain tensor.
bool plain_optional(PyObject *o, OptTensor &out)
{
    if (o == Py_None) {
        out = std::nullopt;
        return true;
    }
    Tensor t;
    if (!plain_tensor(o, t))
        return false;
    out = std::move(t);
    return true;
}

// normalized_shape: an int, or a tuple / list of ints (torch.Size is a tuple). -1 on a Python
// error (set), 0 when it is something else (keel.torch's other path raises the error), 1 on OK.
int int_list(PyObject *o, std::vector<int64_t> &out)
{
    out.clear();
    if (PyLong_CheckExact(o)) {
        out.push_back(PyLong_AsLongLong(o));
        return PyErr_Occurred() ? -1 : 1;
    }
    if (!PyTuple_Check(o) && !PyList_Check(o))
        return 0;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(o);
    PyObject **items = PySequence_Fast_ITEMS(o);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyLong_CheckExact(items[i]))
            return 0;
        out.push_back(PyLong_AsLongLong(items[i]));
        if (PyErr_Occurred())
            return -1;
    }
    return 1;
}

bool keel_computes(const Tensor &x)
{
    auto t = x.scalar_type();
    return x.is_cpu() && (t == at::kFloat || t == at::kBFloat16 || t == at::kHalf);
}

bool as_double(PyObject *o, double &out)
{
    if (!PyFloat_CheckExact(o) && !PyLong_CheckExact(o))
        return false;
    out = PyFloat_AsDouble(o);
    return !PyErr_Occurred();
}

bool as_bool(PyObject *o, bool &out)
{
    if (o != Py_True && o != Py_False)
        return false;
    out = o == Py_True;
    return true;
}

template <typename Sig> c10::TypedOperatorHandle<Sig> op(const char *name)
{
    return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

PyObject *none()
{
    Py_RETURN_NONE;
}

bool modes_in_force()
{
    return at::impl::torch_function_mode_enabled();
}

// layer_norm(x, normalized_shape, weight, bias, eps) -> y, or None.
PyObject *layer_norm(PyObject *, PyObject *const *args, Py_ssize_t nargs)
{
    HANDLE_TH_ERRORS
    Tensor x;
    OptTensor w, b;
    std::vector<int64_t> dims;
    double eps;
    if (nargs != 5 || modes_in_force() || !plain_tensor(args[0], x) || !plain_optional(args[2], w) ||
        !plain_optional(args[3], b) || !as_double(args[4], eps) || !keel_computes(x))
        return none();
    int ok = int_list(args[1], dims);
    if (ok <= 0)
        return ok < 0 ? nullptr : none();
    using Sig = std::tuple<Tensor, Tensor, Tensor>(const Tensor &, at::IntArrayRef, const OptTensor &,
                                                   const OptTensor &, double);
    static auto ln = op<Sig>("keel::layer_norm");
    Tensor y;
    {
        pybind11::gil_scoped_release no_gil;
        y = std::get<0>(ln.call(x, dims, w, b, eps));
    }
    return THPVariable_Wrap(std::move(y));
    END_HANDLE_TH_ERRORS
}

// rms_norm(x, normalized_shape, weight, eps, unit_offset) -> y, or None.
PyObject *rms_norm(PyObject *, PyObject *const *args, Py_ssize_t nargs)
{
    HANDLE_TH_ERRORS
    Tensor x;
    OptTensor w;
    std::vector<int64_t> dims;
    double eps;
    bool unit_offset;
    if (nargs != 5 || modes_in_force() || !plain_tensor(args[0], x) || !plain_optional(args[2], w) ||
        !as_double(args[3], eps) || !as_bool(args[4], unit_offset) || !keel_computes(x))
        return none();
    int ok = int_list(args[1], dims);
    if (ok <= 0)
        return ok < 0 ? nullptr : none();
    using Sig = std::tuple<Tensor, Tensor>(const Tensor &, at::IntArrayRef, const OptTensor &, double, bool);
    static auto rms = op<Sig>("keel::rms_norm");
    Tensor y;
    {
        pybind11::gil_scoped_release no_gil;
        y = std::get<0>(rms.call(x, dims, w, eps, unit_offset));
    }
    return THPVariable_Wrap(std::move(y));
    END_HANDLE_TH_ERRORS
}

// (y, h) with return_sum, else y.
PyObject *y_and_h(Tensor &&y, Tensor &&h, bool return_sum)
{
    if (!return_sum)
        return THPVariable_Wrap(std::move(y));
    PyObject *py = THPVariable_Wrap(std::move(y));
    if (!py)
        return nullptr;
    PyObject *ph = THPVariable_Wrap(std::move(h));
    if (!ph) {
        Py_DECREF(py);
        return nullptr;
    }
    PyObject *pair = PyTuple_Pack(2, py, ph);
    Py_DECREF(py);
    Py_DECREF(ph);
    return pair;
}

// add_layer_norm(x, branch, normalized_shape, weight, bias, eps, alpha, branch_scale, skip_bias,
// return_sum) -> (y, h) or y, or None.
PyObject *add_layer_norm(PyObject *, PyObject *const *args, Py_ssize_t nargs)
{
    HANDLE_TH_ERRORS
    Tensor x, r;
    OptTensor w, b, scale, sbias;
    std::vector<int64_t> dims;
    double eps, alpha;
    bool return_sum;
    if (nargs != 10 || modes_in_force() || !plain_tensor(args[0], x) || !plain_tensor(args[1], r) ||
        !plain_optional(args[3], w) || !plain_optional(args[4], b) || !as_double(args[5], eps) ||
        !as_double(args[6], alpha) || !plain_optional(args[7], scale) || !plain_optional(args[8], sbias) ||
        !as_bool(args[9], return_sum) || !keel_computes(x) || !keel_computes(r))
        return none();
    int ok = int_list(args[2], dims);
    if (ok <= 0)
        return ok < 0 ? nullptr : none();
    using Sig = std::tuple<Tensor, Tensor, Tensor, Tensor>(const Tensor &, const Tensor &, at::IntArrayRef,
                                                           const OptTensor &, const OptTensor &, double, double,
                                                           const OptTensor &, const OptTensor &, bool);
    static auto add_ln = op<Sig>("keel::add_layer_norm");
    Tensor y, h;
    {
        pybind11::gil_scoped_release no_gil;
        auto out = add_ln.call(x, r, dims, w, b, eps, alpha, scale, sbias, return_sum);
        y = std::move(std::get<0>(out));
        h = std::move(std::get<1>(out));
    }
    return y_and_h(std::move(y), std::move(h), return_sum);
    END_HANDLE_TH_ERRORS
}

// add_rms_norm(x, branch, normalized_shape, weight, eps, alpha, branch_scale, skip_bias,
// return_sum, unit_offset) -> (y, h) or y, or None.
PyObject *add_rms_norm(PyObject *, PyObject *const *args, Py_ssize_t nargs)
{
    HANDLE_TH_ERRORS
    Tensor x, r;
    OptTensor w, scale, sbias;
    std::vector<int64_t> dims;
    double eps, alpha;
    bool return_sum, unit_offset;
    if (nargs != 10 || modes_in_force() || !plain_tensor(args[0], x) || !plain_tensor(args[1], r) ||
        !plain_optional(args[3], w) || !as_double(args[4], eps) || !as_double(args[5], alpha) ||
        !plain_optional(args[6], scale) || !plain_optional(args[7], sbias) || !as_bool(args[8], return_sum) ||
        !as_bool(args[9], unit_offset) || !keel_computes(x) || !keel_computes(r))
        return none();
    int ok = int_list(args[2], dims);
    if (ok <= 0)
        return ok < 0 ? nullptr : none();
    using Sig = std::tuple<Tensor, Tensor, Tensor>(const Tensor &, const Tensor &, at::IntArrayRef, const OptTensor &,
                                                   double, double, const OptTensor &, const OptTensor &, bool, bool);
    static auto add_rms = op<Sig>("keel::add_rms_norm");
    Tensor y, h;
    {
        pybind11::gil_scoped_release no_gil;
        auto out = add_rms.call(x, r, dims, w, eps, alpha, scale, sbias, return_sum, unit_offset);
        y = std::move(std::get<0>(out));
        h = std::move(std::get<1>(out));
    }
    return y_and_h(std::move(y), std::move(h), return_sum);
    END_HANDLE_TH_ERRORS
}

// Whether a per-feature tensor (weight, bias, gamma, alpha; absent is fine) can go to keel with x:
// on the CPU, floating, and not raising the result's dtype beyond what keel computes.
bool keel_param(const OptTensor &p)
{
    return !p || (p->is_cpu() && at::isFloatingType(p->scalar_type()));
}

// The dtype torch's formula gives x op others (a 0-dim tensor does not raise a floating x's
// precision); keel computes the call when that is one of its dtypes.
bool keel_result(const Tensor &x, std::initializer_list<const OptTensor *> others)
{
    at::ScalarType dtype = x.scalar_type();
    for (const OptTensor *t : others)
        if (*t && ((*t)->dim() > 0 || !at::isFloatingType(dtype)))
            dtype = at::promote_types(dtype, (*t)->scalar_type());
    return dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf;
}

// layer_scale(x, f, gamma) -> h, or None.
PyObject *layer_scale(PyObject *, PyObject *const *args, Py_ssize_t nargs)
{
    HANDLE_TH_ERRORS
    Tensor x, f;
    OptTensor gamma, fo;
    if (nargs != 3 || modes_in_force() || !plain_tensor(args[0], x) || !plain_tensor(args[1], f) ||
        args[2] == Py_None || !plain_optional(args[2], gamma) || !keel_computes(x) || !keel_computes(f) ||
        !keel_param(gamma) || !keel_result(x, {&(fo = f), &gamma}))
        return none();
    using Sig = Tensor(const Tensor &, const Tensor &, const Tensor &);
    static auto ls = op<Sig>("keel::layer_scale");
    Tensor h;
    {
        pybind11::gil_scoped_release no_gil;
        h = ls.call(x, f, *gamma);
    }
    return THPVariable_Wrap(std::move(h));
    END_HANDLE_TH_ERRORS
}

// dyt(x, normalized_shape, alpha, weight, bias) -> y, or None.
PyObject *dyt(PyObject *, PyObject *const *args, Py_ssize_t nargs)
{
    HANDLE_TH_ERRORS
    Tensor x;
    OptTensor alpha, w, b;
    std::vector<int64_t> dims;
    if (nargs != 5 || modes_in_force() || !plain_tensor(args[0], x) || args[2] == Py_None ||
        !plain_optional(args[2], alpha) || !plain_optional(args[3], w) || !plain_optional(args[4], b) ||
        !keel_computes(x) || !keel_param(alpha) || !keel_param(w) || !keel_param(b) || !keel_result(x, {&alpha, &w, &b}))
        return none();
    int ok = int_list(args[1], dims);
    if (ok <= 0)
        return ok < 0 ? nullptr : none();
    using Sig = Tensor(const Tensor &, at::IntArrayRef, const Tensor &, const OptTensor &, const OptTensor &);
    static auto fn = op<Sig>("keel::dyt");
    Tensor y;
    {
        pybind11::gil_scoped_release no_gil;
        y = fn.call(x, dims, *alpha, w, b);
    }
    return THPVariable_Wrap(std::move(y));
    END_HANDLE_TH_ERRORS
}

// A float32 CPU tensor, or absent.
bool f32_or_absent(const OptTensor &t)
{
    return !t || (t->is_cpu() && t->scalar_type() == at::kFloat);
}

// batch_norm(x, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum,
// eps) -> y, or None (also for what keel does not compute: keel.torch_layers checks and falls
// back there).
PyObject *batch_norm(PyObject *, PyObject *const *args, Py_ssize_t nargs)
{
    HANDLE_TH_ERRORS
    Tensor x;
    OptTensor w, b, rm, rv, count;
    bool training;
    double eps, m = 0;
    if (nargs != 9 || modes_in_force() || !plain_tensor(args[0], x) || !plain_optional(args[1], w) ||
        !plain_optional(args[2], b) || !plain_optional(args[3], rm) || !plain_optional(args[4], rv) ||
        !plain_optional(args[5], count) || !as_bool(args[6], training) ||
        (args[7] != Py_None && !as_double(args[7], m)) || !as_double(args[8], eps))
        return none();
    std::optional<double> momentum = args[7] == Py_None ? std::nullopt : std::optional<double>(m);
    if (x.dim() < 2 || x.size(1) == 0 || !x.is_cpu() || x.scalar_type() != at::kFloat || !f32_or_absent(w) ||
        !f32_or_absent(b) || !f32_or_absent(rm) || !f32_or_absent(rv) ||
        (count && (!count->is_cpu() || count->scalar_type() != at::kLong)) || (momentum && !(m >= 0.0 && m <= 1.0)))
        return none();
    using Sig = std::tuple<Tensor, Tensor, Tensor>(const Tensor &, const OptTensor &, const OptTensor &,
                                                   const OptTensor &, const OptTensor &, const OptTensor &, bool,
                                                   std::optional<double>, double);
    static auto bn = op<Sig>("keel::batch_norm");
    Tensor y;
    {
        pybind11::gil_scoped_release no_gil;
        y = std::get<0>(bn.call(x, w, b, rm, rv, count, training, momentum, eps));
    }
    return THPVariable_Wrap(std::move(y));
    END_HANDLE_TH_ERRORS
}

PyMethodDef methods[] = {
    {"layer_norm", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(layer_norm)), METH_FASTCALL,
     "layer_norm(x, normalized_shape, weight, bias, eps) -> y, or None: keel.torch takes its other path"},
    {"rms_norm", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(rms_norm)), METH_FASTCALL,
     "rms_norm(x, normalized_shape, weight, eps, unit_offset) -> y, or None"},
    {"add_layer_norm", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(add_layer_norm)), METH_FASTCALL,
     "add_layer_norm(x, branch, normalized_shape, weight, bias, eps, alpha, branch_scale, skip_bias, return_sum)"
     " -> (y, h) or y, or None"},
    {"add_rms_norm", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(add_rms_norm)), METH_FASTCALL,
     "add_rms_norm(x, branch, normalized_shape, weight, eps, alpha, branch_scale, skip_bias, return_sum,"
     " unit_offset) -> (y, h) or y, or None"},
    {"layer_scale", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(layer_scale)), METH_FASTCALL,
     "layer_scale(x, f, gamma) -> h, or None"},
    {"dyt", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(dyt)), METH_FASTCALL,
     "dyt(x, normalized_shape, alpha, weight, bias) -> y, or None"},
    {"batch_norm", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(batch_norm)), METH_FASTCALL,
     "batch_norm(x, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum, eps)"
     " -> y, or None"},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "keel_torch_ops",
                      "keel's torch operators (torch.ops.keel) and the eager entry of keel.torch", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit_keel_torch_ops(void)
{
    return PyModule_Create(&module);
}
