"""``convscope probe``: check the border-layer prediction by training (torch-free parts).

The results, the saturation formula and the verdict rule live here and import without torch; the
training and measuring is :func:`convscope.backends.probe.probe`, the data sets
:mod:`convscope.backends.data` (image folders, CIFAR batches) and :mod:`convscope.probe.synthetic`.
"""

from convscope.probe.results import DataInfo, EpochRecord, LayerProbe, ProbeResult, Verdict
from convscope.probe.rules import saturation_from_covariance, verdict

__all__ = ["DataInfo", "EpochRecord", "LayerProbe", "ProbeResult", "Verdict", "saturation_from_covariance",
           "verdict"]
