"""Pieces of the one-line messages every layer writes (no torch, no basicsr)."""
import difflib


def did_you_mean(word, options, cutoff=0.6):
    """``"did you mean 'x'?"`` for the closest of ``options`` to ``word``, or None."""
    same_but_case = [o for o in sorted(options) if str(o).lower() == str(word).lower()]  # difflib ranks 'Adam' first
    close = same_but_case or difflib.get_close_matches(str(word), sorted(options), n=1, cutoff=cutoff)
    return f"did you mean '{close[0]}'?" if close else None


def first_line(error, text=None):
    """The first line of ``text`` (default: ``str(error)``), or the error's class name when it is empty: the detail
    a one-line message quotes from an exception."""
    lines = str(error if text is None else text).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def first_repeat(values):
    """The first value of ``values`` that an earlier one repeats, or None."""
    return next((v for i, v in enumerate(values) if v in values[:i]), None)


def example(keys, n=3):
    """The first ``n`` of ``keys``, comma-separated, with ``...`` when there are more."""
    keys = list(keys)
    return ', '.join(keys[:n]) + (', ...' if len(keys) > n else '')
