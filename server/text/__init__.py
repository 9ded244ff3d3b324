"""The text front end: what a client sends, turned into what a voice can speak.

Raw text goes through SSML parsing (:mod:`.ssml`) or LLM markdown cleanup
(:mod:`.markdown`, :mod:`.cleanup`), then normalisation (:mod:`.normalize`), and comes out
as :mod:`.segments`: text units with pauses, rate, voice and language marks. Every door
and engine uses the one :class:`~.frontend.TextFrontEnd`.
"""

from .cleanup import EmojiMode
from .frontend import (
    FrontEndOptions,
    FrontEndStream,
    TextFormat,
    TextFrontEnd,
    TextRequest,
    warm_libraries,
)
from .markdown import CodeMode
from .segments import Pause, PauseKind, Segment, Speech, Style
from .ssml import SsmlError, SsmlLimits

__all__ = ["CodeMode", "EmojiMode", "FrontEndOptions", "FrontEndStream", "Pause", "PauseKind",
           "Segment", "Speech", "SsmlError", "SsmlLimits", "Style", "TextFormat",
           "TextFrontEnd", "TextRequest", "warm_libraries"]
