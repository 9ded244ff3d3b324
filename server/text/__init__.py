"""The text front end: what a client sends, turned into what a voice can speak.

Raw text goes through SSML parsing or LLM markdown cleanup (:mod:`.cleanup`), then
normalisation (:mod:`.normalize`), and comes out as :mod:`.segments`: text units with
pauses, rate, voice and language marks.
"""
