"""Running experiments: the typed config (:mod:`.config`), the run folder (:mod:`.run_folder`), stage markers
(:mod:`.stages`), the pipeline (:mod:`.pipeline`), what a run writes besides its artefacts (:mod:`.outputs`),
progress (:mod:`.console`) and experiment tracking (:mod:`.tracking`).

Nothing is imported here, so ``import digr.running.config`` does not import the pipeline and its dependencies.
"""
