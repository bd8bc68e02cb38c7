# `make tutorials` executes the tutorials with `jupyter nbconvert --config nbconvert_config.py`:
# in place, in notebooks/, widget state saved, no timings; afterwards the notebook metadata is only
# what the jupytext source sets (kernelspec, jupytext) plus the widgets and the language name, and
# code cells keep only their tags, so a re-run changes outputs, not metadata.
c = get_config()  # noqa: F821 (traitlets' config loader provides it)

c.NbConvertApp.export_format = "notebook"
c.NbConvertApp.use_output_suffix = False
c.FilesWriter.build_directory = ""  # write next to the input: in place
c.ExecutePreprocessor.enabled = True
# The venv's own ipykernel spec: jupyter_client starts its "python" as this interpreter (sys.executable).
c.ExecutePreprocessor.kernel_name = "python3"
c.ExecutePreprocessor.timeout = 900
c.ExecutePreprocessor.store_widget_state = True
c.ExecutePreprocessor.record_timing = False
c.ClearMetadataPreprocessor.enabled = True
c.ClearMetadataPreprocessor.preserve_nb_metadata_mask = {
    ("language_info", "name"),
    "kernelspec",
    "jupytext",
    "widgets",
}
c.ClearMetadataPreprocessor.preserve_cell_metadata_mask = {"tags"}
