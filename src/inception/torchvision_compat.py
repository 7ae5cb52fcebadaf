"""The correspondence between our parameter names and `torchvision.models.googlenet`'s.

With `GoogLeNetConfig.torchvision()` the two models have the same parameters one for one; only the
names differ, and only in their prefix: our modules are named after Table 1's rows.
"""

from __future__ import annotations

import re

_INCEPTION = re.compile(r"^layers\.([345][a-e])\.")
_PREFIXES = {
    "layers.conv1.": "conv1.",
    "layers.conv2.0.": "conv2.",  # the "3x3 reduce" 1x1 convolution of Table 1's conv2 row
    "layers.conv2.1.": "conv3.",  # conv2's 3x3 convolution
    "layers.linear.": "fc.",
    "aux.4a.": "aux1.",
    "aux.4d.": "aux2.",
}


def to_torchvision_key(key: str) -> str:
    """Our state-dict key as torchvision names it, e.g. `layers.3a.branch1.conv.weight` ->
    `inception3a.branch1.conv.weight`."""
    m = _INCEPTION.match(key)
    if m:
        return f"inception{m.group(1)}.{key[m.end():]}"
    for ours, theirs in _PREFIXES.items():
        if key.startswith(ours):
            return theirs + key[len(ours):]
    raise KeyError(f"{key!r} has no torchvision counterpart")
