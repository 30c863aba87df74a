"""The one definition of a training's settings: Trainer keywords, YAML keys, CLI flags, checkpoints.

A training's settings are four groups of frozen dataclasses, grouped the way users think:

=================  ===========================================================================
group              settings
=================  ===========================================================================
:class:`Training`  what to train: model_fn, loss_fn, optimizer, step, metrics, early_stopping,
                   batch_size, seed
:class:`Algorithm` how updates are made: rule, max_staleness, push_every
:class:`Scaling`   where it runs: workers, threads_per_worker, client, ps_worker, dedicated_ps,
                   security, malloc_fix
:class:`FaultPolicy` what survives faults: timeout, chunk_timeout, checkpoints
=================  ===========================================================================

Each field declares (in its :class:`Spec`) its type, default, allowed values, a one-line help,
an example, its YAML keys (each a :class:`Key` with a JSON Schema) and its place in a
checkpoint. Everything else is made from these declarations: the checks of
``psdist.Trainer(...)``'s keywords (:meth:`Settings.from_kwargs`), the YAML config
(:mod:`psdist.config`), the flags of ``psdist train`` (:mod:`psdist.cli`), the checkpoint's
``meta["trainer"]`` (:meth:`Settings.to_checkpoint`, :meth:`Settings.from_checkpoint`) and the
JSON Schema for editors (:func:`json_schema`, ``psdist schema``).

Why dataclasses and not pydantic v2: the settings travel to the Dask workers and into the
parameter server's environment, which then needs no extra dependency to unpickle them;
frozen dataclasses are plain picklable objects holding the user's own objects (model
functions, optimizers, rules) unchanged; and psdist's errors must name the setting, the bad
value and valid code to paste (``batch_size=0 must be an integer >= 1, e.g. batch_size=128``),
which a hand-written check says directly instead of rewording a validation library's report.
The checks of plain values read the same JSON Schema fragments that :func:`json_schema`
publishes, so the YAML check and the editor's schema cannot disagree.

The package: :mod:`~psdist.settings.schema` (the JSON Schema subset that checks plain values),
:mod:`~psdist.settings.spec` (how a setting is declared), :mod:`~psdist.settings.groups` (the
declarations) and :mod:`~psdist.settings.views` (:class:`Settings` and its views).
"""

from psdist.settings.groups import (
    AUTO,
    GROUPS,
    JOB_KEYS,
    Algorithm,
    FaultPolicy,
    Scaling,
    Training,
    import_object,
)
from psdist.settings.schema import Mismatch, describe, did_you_mean, mismatch
from psdist.settings.spec import Key, Spec
from psdist.settings.views import Settings, json_schema, restored_settings, specs, stored_values, yaml_keys

__all__ = [
    "AUTO",
    "GROUPS",
    "JOB_KEYS",
    "Algorithm",
    "FaultPolicy",
    "Key",
    "Mismatch",
    "Scaling",
    "Settings",
    "Spec",
    "Training",
    "describe",
    "did_you_mean",
    "import_object",
    "json_schema",
    "mismatch",
    "restored_settings",
    "specs",
    "stored_values",
    "yaml_keys",
]
