"""napari layer of flexview: readers, sample data and dock widgets over the engine."""
