"""Pictures: grids of images (prior samples, reconstructions beside the originals), the latent space
(scatter, traversals, interpolations), training curves, and the histograms of an evaluation.

matplotlib is imported inside the functions, and only its object-oriented ``Figure`` API is used
(no pyplot global state, no display needed). Each picture is rendered in memory and written
atomically (:func:`pyrovae.rundir.write_png`, 80 dots per inch), to exactly the path given.
"""

from . import curves, grids, histograms, latent
from .curves import *  # noqa: F403
from .grids import *  # noqa: F403
from .histograms import *  # noqa: F403
from .latent import *  # noqa: F403

__all__ = [*grids.__all__, *latent.__all__, *curves.__all__, *histograms.__all__]
