"""Decisions and reads that every process of a distributed run must share (why and where: docs/training.md,
Distributed training). Without an initialised process group every function is the plain local operation."""
import torch
import torch.distributed as dist


def world_size():
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank():
    return dist.get_rank() if world_size() > 1 else 0


_stop_requests = []  # why this process must stop the run (e.g. its training data is gone), for reduce_step


def request_stop(message):
    """Ask every rank to stop at the end of this step (read by :func:`reduce_step`), with ``message`` as the one line
    this rank prints; a rank that stops alone leaves the others waiting in their next collective."""
    _stop_requests.append(message)


def forget_stop_requests():
    """For a new run in the same process."""
    _stop_requests.clear()


def reduce_step(tensors):
    """The one collective of a training step's values: ``tensors`` (0-d, one device) averaged over the ranks, and,
    as a last value, how many ranks asked to stop (:func:`request_stop`), with one ``all_reduce``. Every rank gets the
    same values, a NaN or Inf on any rank included (BasicSR's ``reduce_loss_dict`` reduces to rank 0 only). No host
    synchronisation: the caller reads the values back once, with :func:`stop_if_asked` on the last one."""
    losses = [t.detach().float().mean() for t in tensors]
    asked = torch.ones((), device=losses[0].device) if _stop_requests else torch.zeros((), device=losses[0].device)
    values = torch.stack(losses + [asked])
    if world_size() > 1:
        dist.all_reduce(values)
        values[:-1] /= world_size()
    return values


def stop_if_asked(asked):
    """Stop the run when ``asked`` (the count :func:`reduce_step` returned, read back) is not zero: with this rank's
    own message, or one that names the others."""
    if _stop_requests:
        raise SystemExit(_stop_requests[0])
    if asked:
        raise SystemExit(f'error: training stopped: {int(asked)} other process(es) could not go on; their message '
                         'above says why')


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
