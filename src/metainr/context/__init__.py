"""Context selection for the inner loop (GradNCP), bootstrapped correction, test-time rescaling."""

from metainr.context.bootstrap import BootstrapCorrection
from metainr.context.rescale import rescaled_gradients
from metainr.context.selectors import GradNCPSelector, RandomSelector, build_selector, gradncp_scores

__all__ = ["BootstrapCorrection", "GradNCPSelector", "RandomSelector", "build_selector", "gradncp_scores",
           "rescaled_gradients"]
