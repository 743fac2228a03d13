"""`mona prepare`: raw dataset downloads -> the SSL4MIS layout with `mona.json`, with the paper's splits.

One module per raw layout (`acdc`, `lits`, `mmwhs`, `nnunet`); what they share (reading NIfTI
pairs, normalisation, atomic writing) is in `common`.
"""

from mona.data.prepare.acdc import prepare_acdc
from mona.data.prepare.lits import prepare_lits
from mona.data.prepare.mmwhs import prepare_mmwhs
from mona.data.prepare.nnunet import prepare_nnunet

__all__ = ["prepare_acdc", "prepare_lits", "prepare_mmwhs", "prepare_nnunet"]
