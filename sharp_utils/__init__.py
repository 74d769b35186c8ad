"""sharp_utils: the reference companion of Jeon, Kim, No, *Understanding and Mitigating Memorization in
Generative Models via Sharpness of Probability Landscapes* (ICML 2025).

Layers (each imports only those above it):
``paths`` → math (``scores``, ``hessian``, ``spectrum``, ``trace``, ``gaussian``, ``sampling``, ``metrics``)
→ model adapters → experiments and CLI → notebooks.
"""
__version__ = "0.1.0"
