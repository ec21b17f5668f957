"""The mixin of dock widgets that follow the run open in the viewer's shared context.

The context itself (:class:`~flexview.app.context.FlexviewContext`) is Qt-free and lives in
:mod:`flexview.app.context`.
"""
from __future__ import annotations

from flexview._napari._qt import notify_error
from flexview.app.messages import error_text


class FollowsContextRun:
    """Mixin for dock widgets that show the run open in the shared context (Movie, Select).

    Needs ``self.context`` (FlexviewContext), ``self.state`` (with ``run`` and ``set_run``),
    ``self.folder`` (a run-folder picker) and ``self.status`` (a QLabel).
    """

    def open_folder(self) -> None:
        try:
            self.context.open_run(self.folder.text())
        except Exception as exc:  # shown to the user; the viewer stays usable
            self.status.setText(error_text(exc))
            notify_error(exc)

    def _on_context_run(self, run) -> None:
        if run is not None and run is not self.state.run:
            self.state.set_run(run)
