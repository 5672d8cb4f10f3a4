# cython: language_level=3, boundscheck=False, wraparound=False
"""gdfast's fused steps called from Cython without the GIL: a training loop written in Cython
(fit_line) and the loops the tests and the call-overhead benchmark drive (adam_steps)."""

from cython cimport floating
from libc.stdint cimport int64_t

from gdfast.cython_api cimport (FLOAT32, FLOAT64, OK, AdamHyper, adam_defaults, adam_step,
                                last_error)


cdef int check(int status) except -1:
    if status != OK:
        raise ValueError(last_error().decode())
    return 0


def adam_steps(floating[::1] param, floating[::1] grad, floating[::1] exp_avg,
               floating[::1] exp_avg_sq, double lr, int64_t first_step, int64_t num_steps):
    """Steps 1-D contiguous arrays with Adam `num_steps` times (step counts first_step, ...),
    without the GIL: other Python threads run meanwhile."""
    cdef AdamHyper h = adam_defaults()
    h.lr = lr
    cdef int dtype = FLOAT32 if floating is float else FLOAT64
    cdef int64_t n = param.shape[0]
    if grad.shape[0] != n or exp_avg.shape[0] != n or exp_avg_sq.shape[0] != n:
        raise ValueError("adam_steps: the arrays differ in length")
    cdef int64_t s
    cdef int status = OK
    with nogil:
        for s in range(num_steps):
            h.step = first_step + s
            status = adam_step(&h, dtype, n, &param[0], &grad[0], &exp_avg[0], &exp_avg_sq[0],
                               NULL)
            if status != OK:
                break
    check(status)  # with the GIL again: last_error() is this thread's message


def fit_line(double[::1] x, double[::1] y, int64_t epochs, double lr=0.05):
    """Least-squares fit of y ~ w x + b by full-batch gradient descent with Adam: the gradient
    is computed here, the step is gdfast's. Returns (w, b, loss after each epoch)."""
    cdef double[2] wb = [0.0, 0.0]
    cdef double[2] grad, exp_avg = [0.0, 0.0], exp_avg_sq = [0.0, 0.0]
    cdef AdamHyper h = adam_defaults()
    h.lr = lr
    losses = []
    cdef int64_t i, epoch, n = x.shape[0]
    cdef double residual, loss
    cdef int status
    for epoch in range(epochs):
        with nogil:
            grad[0] = grad[1] = loss = 0.0
            for i in range(n):
                residual = wb[0] * x[i] + wb[1] - y[i]
                loss += residual * residual / n
                grad[0] += 2.0 * residual * x[i] / n
                grad[1] += 2.0 * residual / n
            h.step = epoch + 1
            status = adam_step(&h, FLOAT64, 2, wb, grad, exp_avg, exp_avg_sq, NULL)
        check(status)
        losses.append(loss)
    return wb[0], wb[1], losses
