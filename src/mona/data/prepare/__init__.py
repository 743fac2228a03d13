"""`mona prepare`: raw dataset downloads -> the SSL4MIS layout with `mona.json`, with the paper's splits;
own scans, some with masks, with a seeded split.

One module per raw layout (`acdc`, `lits` and `mmwhs` through `numbered`, `nnunet`, `folder`); what they
share has a module per concern: `finding` (scan and mask files paired by name), `reading` (a case
read and checked), `normalise`, `splitting` (by patient, seeded) and `writing` (the layout, staged
and moved into place). `folder` reuses `nnunet`'s path for partly labeled data.
"""

from mona.data.prepare.acdc import prepare_acdc
from mona.data.prepare.folder import prepare_folder
from mona.data.prepare.lits import prepare_lits
from mona.data.prepare.mmwhs import prepare_mmwhs
from mona.data.prepare.nnunet import prepare_nnunet

__all__ = ["prepare_acdc", "prepare_folder", "prepare_lits", "prepare_mmwhs", "prepare_nnunet"]
