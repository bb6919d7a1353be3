"""convscope: know before you build.

Receptive fields, border layer and unproductive layers, cost, speed and deployment plans of
convolutional networks — before anything is trained.

    >>> import convscope
    >>> a = convscope.analyze("zoo:vgg16-cifar", input=(3, 32, 32))
    >>> a.border_layer
    'block3.2.conv'
"""

__version__ = "0.1.0"

from convscope.api import analyze, analyze_resolutions, load_graph  # noqa: E402
from convscope.errors import ConvscopeError  # noqa: E402

__all__ = ["analyze", "analyze_resolutions", "load_graph", "ConvscopeError", "__version__"]
from convscope.advice_api import suggest  # noqa: E402,F401  (design advice, issue 6)
