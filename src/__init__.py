"""cfclip: CF-CLIP (counterfactual image manipulation via CLIP) as a Lightning + Hydra framework."""

from src.utils.resolvers import register as _register_resolvers

_register_resolvers()
