"""The serving stage: the model server (`serving.app`) and the deployment logic of the
serving DAG (`serving.tasks`). Submodules import their heavy dependencies themselves,
so `serving.sensor` stays cheap for the DAG file."""
