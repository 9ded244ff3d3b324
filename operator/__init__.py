"""The Chorus kopf operator (``chorus operator``, ``chorus render``); see issue #5."""
