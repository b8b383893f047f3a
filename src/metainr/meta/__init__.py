"""Functional meta-learning: parameter partition, inner loop, outer loss, fitting."""

from metainr.meta.fit import FitResult, fit, render
from metainr.meta.learner import MetaLearner, per_signal_mse
from metainr.meta.params import ParamPartition
from metainr.meta.parts import ContextSelector, OuterTerm, UpdateShaper

__all__ = ["ContextSelector", "FitResult", "MetaLearner", "OuterTerm", "ParamPartition", "UpdateShaper",
           "fit", "per_signal_mse", "render"]
