"""convscope: know before you build.

Receptive fields, border layer and unproductive layers, cost, speed and deployment plans of
convolutional networks — before anything is trained.

    >>> import convscope
    >>> a = convscope.analyze("zoo:vgg16-cifar", input=(3, 32, 32))
    >>> a.border_layer
    'block3.2.conv'
"""

__version__ = "0.1.0"

from convscope.advice_api import suggest  # noqa: E402  (design advice, issue 6)
from convscope.analyses.deployment import compare  # noqa: E402  (deployment plans, issue 5)
from convscope.api import analyze, analyze_resolutions, load_graph, measure  # noqa: E402
from convscope.errors import ConvscopeError  # noqa: E402

# Training probes (issue 7) need torch: `from convscope.backends.probe import probe, ProbeConfig`
# (`convscope.probe` is the package of their torch-free parts).
__all__ = ["analyze", "analyze_resolutions", "load_graph", "suggest", "compare", "measure", "ConvscopeError",
           "__version__"]
