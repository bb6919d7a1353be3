"""convscope: know before you build.

Receptive fields, border layer and unproductive layers, cost, speed and deployment plans of
convolutional networks — before anything is trained.

    >>> import convscope
    >>> a = convscope.analyze("zoo:vgg16-cifar", input=(3, 32, 32))
    >>> a.border_layer
    'block3.2.conv'
"""

__version__ = "0.1.0"

# The API is imported on first use (PEP 562): `convscope --help`, and Ctrl-C right after starting a
# command, do not wait for numpy, yaml and the analyses to load.
_API = {"suggest": "convscope.advice_api", "compare": "convscope.analyses.deployment", "analyze": "convscope.api",
        "analyze_resolutions": "convscope.api", "load_graph": "convscope.api", "measure": "convscope.api",
        "ConvscopeError": "convscope.errors"}
# Training probes (issue 7) need torch: `from convscope.backends.probe import probe, ProbeConfig`
# (`convscope.probe` is the package of their torch-free parts).
__all__ = ["analyze", "analyze_resolutions", "load_graph", "suggest", "compare", "measure", "ConvscopeError",
           "__version__"]


def __getattr__(name: str) -> object:
    if name in _API:
        import importlib

        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'convscope' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
