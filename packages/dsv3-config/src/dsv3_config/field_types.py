"""The numeric field types of every config model: strict (a bool, a float or a string is not an int),
finite, and bounded by what a torch tensor can index.

Strict because transformers stores whatever the JSON holds and its modeling code then fails on it
(`nn.Linear(7168.0, ...)` and `range(61.0)` raise TypeError; `hidden_size: true` would silently build a
1-wide model). A JSON integer is accepted where a float goes (`"rope_theta": 10000`), as JSON has one number
type. Sizes stop at int64's maximum: torch indexes tensors with int64, so a larger dimension cannot exist.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

INT64_MAX = 2**63 - 1

PositiveInt = Annotated[int, Field(strict=True, gt=0, le=INT64_MAX)]
NonNegativeInt = Annotated[int, Field(strict=True, ge=0, le=INT64_MAX)]
TokenId = Annotated[int, Field(strict=True, ge=0, le=INT64_MAX)]
PositiveFloat = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
