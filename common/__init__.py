"""Contracts shared by every Chorus component.

This package sits at the bottom of the import graph: it imports nothing from
``chorus.server``, ``chorus.voice_manager`` or ``chorus.operator`` so that each
component can depend on it without dragging in another component's dependencies.
"""
