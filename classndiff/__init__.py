"""Class-N-Diff: one jointly trained model that diagnoses dermoscopic images and generates
synthetic lesions by diagnosis, skin tone and sex (Imran & Munia, EMBC 2025)."""

from classndiff.version import __version__


def __getattr__(name: str):  # lazy: `import classndiff` stays cheap (no torch)
    if name in ("ClassNDiffPipeline", "Diagnosis", "Generation", "ClassNDiffArgumentError"):
        from classndiff.pipelines import pipeline

        return getattr(pipeline, name)
    if name == "ImageInputError":
        from classndiff.pipelines.inputs import ImageInputError

        return ImageInputError
    raise AttributeError(name)


__all__ = ["ClassNDiffPipeline", "Diagnosis", "Generation", "ClassNDiffArgumentError",
           "ImageInputError", "__version__"]
