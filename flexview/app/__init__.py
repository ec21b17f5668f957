"""Qt-free state of the napari app: one module per dock widget.

Each ``*State`` class holds what a widget shows and edits, calls the engine, and announces
changes with psygnal signals; the Qt widgets in ``flexview._napari`` only lay it out and forward
user input. Nothing here imports Qt or napari, so the state is tested (and usable from scripts)
without a display.

Modules: :mod:`~flexview.app.context` (what the widgets of one viewer share),
:mod:`~flexview.app.data`, :mod:`~flexview.app.mesh`, :mod:`~flexview.app.train`,
:mod:`~flexview.app.explore`, :mod:`~flexview.app.movie`, :mod:`~flexview.app.select` (one per
widget), :mod:`~flexview.app.latent_view` (the 2-D views of latent space),
:mod:`~flexview.app.geometry` (engine coordinates → napari world coordinates),
:mod:`~flexview.app.render` (newest-only background rendering) and
:mod:`~flexview.app.messages` (error text for the user).
"""
