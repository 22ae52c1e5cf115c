"""Decisions and reads that every process of a distributed run must share, in one place.

A decision that stops, skips or changes a training step (a non-finite loss, a non-finite gradient, compiling) is
taken from values every rank holds after one collective, so all ranks take it together: a rank that decides alone
leaves the others waiting in their next collective (NCCL: until the timeout). A file the run wrote lives on rank 0's
disk only (multi-node runs without a shared filesystem), so rank 0 reads it and sends it to the others.

Without an initialised process group (one process) every function is the plain local operation.
"""
import torch
import torch.distributed as dist


def world_size():
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank():
    return dist.get_rank() if world_size() > 1 else 0


def mean_across_ranks(tensors):
    """``tensors`` (0-d, one device) stacked and averaged over the ranks with one ``all_reduce``: every rank gets the
    same values (BasicSR's ``reduce_loss_dict`` reduces to rank 0 only). A NaN or Inf on any rank is in the result on
    every rank. No host synchronisation."""
    values = torch.stack([t.detach().float().mean() for t in tensors])
    if world_size() > 1:
        dist.all_reduce(values)
        values /= world_size()
    return values


def all_ranks_agree(ok, device):
    """True on every rank when ``ok`` is true on every rank (one ``all_reduce`` of a flag): for a local check, such as
    a compiled forward matching the eager one, whose outcome must be the same everywhere."""
    if world_size() == 1:
        return bool(ok)
    flag = torch.tensor([1.0 if ok else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


_reading = []  # non-empty while rank 0 runs a read_on_rank0 read


def read_on_rank0(read):
    """``read()`` run on rank 0 and its result (or the exception it raised, a ``SystemExit`` too) sent to every rank,
    so all ranks load the same object or fail together with rank 0's message. Every rank must call it at the same
    point (it is a collective)."""
    if world_size() == 1 or _reading:  # nested (a read inside a read): rank 0 is already the only reader
        return read()
    box = [None]
    if rank() == 0:
        _reading.append(True)
        try:
            box[0] = (True, read())
        except BaseException as exc:  # noqa: BLE001  (sent, then raised on every rank)
            box[0] = (False, exc)
        finally:
            _reading.pop()
    dist.broadcast_object_list(box, src=0)
    ok, value = box[0]
    if not ok:
        raise value
    return value


def broadcast_module_state(module):
    """Parameters and buffers of ``module`` from rank 0 to all ranks (in place)."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for tensor in module.state_dict(keep_vars=True).values():
            dist.broadcast(tensor.data, src=0)
