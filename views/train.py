"""Train: assemble a run (model, data, augmentation, loss, recipe) and launch it in the background."""
from __future__ import annotations

import math

import streamlit as st

from lib.data.augment import default_pipeline
from lib.jobs import queue as jobs
from lib.jobs import scheduler
from lib.losses.registry import LOSSES
from lib.model.presets import FACE_PRESETS, PRESETS
from lib.model.warnings import channels_last_warning
from lib.store.catalog import list_checkpoints
from lib.train.recipes import CONVNEXT_RECIPE, all_recipes, convnext_table
from lib.ui import train_form, train_notes
from lib.ui.build_notes import layernorm_advice
from lib.ui.text import as_plain_markdown
from views.common import MODEL_SPEC_KEY, PIPELINE_KEY, data_root, runs_dir, show_error, user_name

st.title("Train")
st.caption("Put together what will train, then launch it as a background job: the app stays free, "
           "and the Runs page shows its progress and curves.")
recipes = all_recipes()
RECIPE_MODEL = train_form.RECIPE_MODEL
SOURCE_WORDS = {"Build page": "built on the Build page", "Preset": "a preset"}
VALUES_FROM = "train.values_from"  # the checkpoint whose settings the widgets took last
ORIGIN = "train.values_origin"  # where those settings came from, in words


def apply_recipe() -> None:
    """Copy the chosen recipe into the widgets (the user can change any of them afterwards)."""
    state, note = train_form.recipe_state(recipes[st.session_state["train.recipe"]], list_checkpoints())
    for key in [key for key in st.session_state if str(key).startswith("train.lp.")]:
        del st.session_state[key]  # loss parameters the recipe does not set go back to their defaults
    st.session_state.update(state)
    st.session_state[VALUES_FROM] = st.session_state.get("train.init_from")  # the recipe's settings win
    st.session_state[ORIGIN] = "the recipe's (section 4)"
    if note:
        st.toast(note, icon=":material/warning:")


def take_checkpoint_values(label: str, folder, fallback: dict) -> None:
    """Fill the hyperparameters with the picked checkpoint's own settings (or the recipe's), once per pick."""
    if st.session_state.get(VALUES_FROM) == label:
        return  # already taken: keep what the user changed since
    values, origin = train_form.checkpoint_values(folder, fallback)
    st.session_state.update({f"train.{name}": value for name, value in values.items() if name in train_form.FIELDS})
    st.session_state[VALUES_FROM], st.session_state[ORIGIN] = label, origin


def keep_widget_values() -> None:
    """Hand every Train value back to Streamlit at the start of a run. A widget left out of one run
    (the page stopped above it) loses its state, and when it comes back the browser shows its
    minimum while the server keeps the old value: the summary and Launch would then disagree with
    the fields. Set through st.session_state, a value is sent to the browser with the widget."""
    for key in [key for key in st.session_state if str(key).startswith("train.") and key != "train.launch"]:
        st.session_state[key] = st.session_state[key]


def widget(item: train_form.Field, container, fallback, disabled: bool = False):
    key = f"train.{item.name}"
    if key not in st.session_state:  # new, or hidden in the last run (which drops its value)
        st.session_state[key] = fallback[item.name]
    common = {"key": key, "help": item.help, "disabled": disabled}
    if item.kind == "choice":
        return container.selectbox(item.label, item.choices, **common)
    if item.kind == "bool":
        return container.toggle(item.label, **common)
    if item.kind == "int":
        return int(container.number_input(item.label, int(item.low), int(item.high), step=int(item.step), **common))
    return float(container.number_input(item.label, float(item.low), float(item.high), step=item.step,
                                        format="%g", **common))


def loss_widget(name: str, param, col):
    key = f"train.lp.{name}"
    cast = int if param.kind == "int" else float
    st.session_state.setdefault(key, cast(param.default))
    number = col.number_input(name.replace("_", " "), cast(param.low), cast(param.high), step=train_form.param_step(param),
                              key=key, help=param.help, format="%d" if param.kind == "int" else "%g")
    return cast(number)


def render_group(group: str, items: tuple, values: dict, fallback: dict, info, model: dict) -> None:
    """Plain settings side by side; a setting with a lesson gets its own row, the lesson beside it."""
    with st.container(border=True):
        st.markdown(f"**{group}**")
        current = {item.name: st.session_state.get(f"train.{item.name}", fallback[item.name]) for item in items}
        shown = [item for item in items if train_form.is_shown(item, current)]
        plain = [item for item in shown if not item.lesson]
        for item in shown:
            if item.lesson:
                left, right = st.columns([1, 2])
                values[item.name] = render(item, left, fallback, info)
                right.caption(item.lesson)
        # At least three columns: a lone field (gradient clipping) keeps the width of its neighbours' fields,
        # and bottom alignment keeps toggles level with the inputs whose labels wrap.
        # At most five to a row, rows balanced: six settings make two rows of three, not five and one.
        per_row = math.ceil(len(plain) / max(1, math.ceil(len(plain) / 5)))
        for start in range(0, len(plain), max(1, per_row)):
            row = plain[start:start + per_row]
            for item, col in zip(row, st.columns(max(3, per_row), vertical_alignment="bottom")):
                values[item.name] = render(item, col, fallback, info)
        if group == "Regularisation":
            st.caption(train_form.DROPOUT_LESSON.format(p=model["dropout"]))
        if group == "System":
            st.caption(train_notes.hardware_note(values))


def render(item: train_form.Field, col, fallback: dict, info):
    hard_labels = item.name in ("mix", "mix_alpha") and info.needs_hard_labels
    if hard_labels:
        st.session_state["train.mix"] = "none"
    return widget(item, col, fallback, disabled=hard_labels)


if st.session_state.get("train.recipe") not in recipes:  # first visit, or its recipe file was removed
    st.session_state["train.recipe"] = next(iter(recipes))
    apply_recipe()
    if st.session_state.get(MODEL_SPEC_KEY):  # a model built on the Build page comes first
        st.session_state["train.source"] = "Build page"
keep_widget_values()

# 1 - model --------------------------------------------------------------------------------------
st.subheader("1 · Model")
built = st.session_state.get(MODEL_SPEC_KEY)
scheme = st.radio("Training scheme", list(train_form.SCHEMES), format_func=train_form.SCHEMES.get,
                  horizontal=True, key="train.scheme")
st.caption(train_form.SCHEME_LESSON)
init_from = ""
if scheme == "sequential":
    found = list_checkpoints()
    if not found:
        st.info("No checkpoint to fine-tune yet: train a CE run first (or add the demo checkpoints).")
        st.stop()
    label = st.selectbox("Checkpoint to fine-tune", [lbl for lbl, _ in found], key="train.init_from")
    folder = dict(found)[label]
    spec, init_from = train_form.checkpoint_spec(folder), str(folder)
    problem = train_form.checkpoint_problem(folder, data_root())
    if problem:
        show_error(f"This checkpoint cannot be fine-tuned here: {problem}.",
                   "Pick another checkpoint or data set.")
        st.stop()
    take_checkpoint_values(label, folder, train_form.recipe_values(recipes[st.session_state["train.recipe"]]))
    st.caption(train_notes.FINE_TUNE_NOTE.format(origin=st.session_state.get(ORIGIN, "the recipe's (section 4)")))
else:
    recipe_model = recipes[st.session_state["train.recipe"]].model
    sources = ["Build page"] * bool(built) + ["Preset"] + [RECIPE_MODEL] * bool(recipe_model)
    if st.session_state.get("train.source") not in sources:
        st.session_state["train.source"] = sources[0]
    source = st.radio("Model", sources, horizontal=True, key="train.source",
                      help="The model you assembled on the Build page, a ready-made face network, or the "
                           "model the recipe (section 4) was made for.")
    if not built:
        st.caption("Nothing built yet: assemble your own network on the Build page, or train a preset.")
    if source == "Preset":
        preset = PRESETS[st.selectbox("Preset", FACE_PRESETS, key="train.preset")]
        spec = preset.to_dict()
        if norm_advice := layernorm_advice(preset, "load it on the Build page and set **Norm** to batch there"):
            st.caption(norm_advice)
    else:
        spec = built if source == "Build page" else recipe_model
facts = train_form.dataset_facts(data_root())
if spec is None or facts["identities"] == 0:
    show_error("Nothing to train: the model or the data set could not be read.",
               "Pick another checkpoint, preset or data set in the sidebar.")
    st.stop()
try:
    model = train_form.model_facts(spec, facts["identities"])
except (ValueError, TypeError) as err:  # a spec edited into an impossible shape
    show_error(f"This model cannot be built: {err}", "Fix it on the Build page, or pick a preset.")
    st.stop()
cols = st.columns(4)
cols[0].metric("Parameters", train_form.format_count(model["params"]))
cols[1].metric("MACs per image", train_form.format_count(model["macs"]), help="1 MAC = 2 FLOPs")
cols[2].metric("Embedding", f"{model['embedding']}-d")
cols[3].metric("Identities", facts["identities"], help="The classifier gets one output per training identity.")

# 2 - data and augmentation ------------------------------------------------------------------------
st.subheader("2 · Data and augmentation")
pipeline = st.session_state.get(PIPELINE_KEY) or default_pipeline()
origin = "from the Augment page" if st.session_state.get(PIPELINE_KEY) else "the default (edit it on the Augment page)"
st.markdown(f"Data set **{as_plain_markdown(data_root().name)}**: {facts['images']:,} training images of "
            f"{facts['identities']} "
            f"identities. Augmentation, {origin}: " + " → ".join(f"`{step['name']}`" for step in pipeline))

# 3 - loss ------------------------------------------------------------------------------------------
st.subheader("3 · Loss")
loss = st.selectbox("Loss", list(LOSSES), format_func=lambda name: LOSSES[name].title, key="train.loss")
info = LOSSES[loss]
st.latex(info.formula)
st.markdown(info.explanation)
loss_params = {}
others = [name for name in info.params if name not in ("label_smoothing", "s")]
if "s" in info.params:  # the scale, with why it is 30 here and 64 in the papers beside it
    left, right = st.columns([1, 2])
    loss_params["s"] = loss_widget("s", info.params["s"], left)
    right.caption(train_notes.scale_lesson(facts["identities"]))
for col, name in zip(st.columns(max(1, len(others))), others):
    loss_params[name] = loss_widget(name, info.params[name], col)
if "label_smoothing" in info.params:
    left, right = st.columns([1, 2])
    loss_params["label_smoothing"] = loss_widget("label_smoothing", info.params["label_smoothing"], left)
    right.caption(train_form.label_smoothing_lesson(facts["identities"], loss_params["label_smoothing"]))
fallback = train_form.recipe_values(recipes[st.session_state["train.recipe"]])
fallback.setdefault("drop_path_rate", float(spec.get("drop_path_rate", 0.0)))  # the model's own
pk_batch = {}  # K, for a loss that trains on P x K batches
if info.needs_pk_batches:
    left, right = st.columns([1, 2])
    pk_batch[train_form.PK_FIELD.name] = widget(train_form.PK_FIELD, left, fallback)
    batch_size = st.session_state.get("train.batch_size", fallback["batch_size"])  # its widget is in section 4
    right.caption(train_form.pk_batch_lesson(loss, batch_size, pk_batch[train_form.PK_FIELD.name]))
    if problem := train_form.pk_batch_problem(loss, batch_size, pk_batch[train_form.PK_FIELD.name]):
        st.warning(problem, icon=":material/warning:")
joint = {}  # the course's joint training: this loss plus a weighted center term
if loss not in ("center", "triplet"):  # those two already add their term to CE
    left, right = st.columns([1, 2])
    joint[train_form.JOINT_FIELD.name] = widget(train_form.JOINT_FIELD, left, fallback)
    if joint[train_form.JOINT_FIELD.name] != "none":
        joint[train_form.JOINT_WEIGHT_FIELD.name] = widget(train_form.JOINT_WEIGHT_FIELD, left, fallback)
    right.caption(train_form.JOINT_LESSON)
if info.has_class_weights and loss != "center" and scheme == "scratch":
    st.caption("From scratch a margin loss may stay near chance for a while; if it does, fine-tune a CE "
               "checkpoint instead (training scheme above).")

# 4 - recipe and hyperparameters -------------------------------------------------------------------------
st.subheader("4 · Recipe and hyperparameters")
st.selectbox("Recipe", list(recipes), format_func=lambda name: recipes[name].title, key="train.recipe",
             on_change=apply_recipe, help="Sets every value below; change any of them afterwards.")
trained = "the checkpoint being fine-tuned" if scheme == "sequential" else SOURCE_WORDS.get(source, source)
st.caption(train_form.recipe_summary(recipes[st.session_state["train.recipe"]], spec, trained))
with st.expander("The ConvNeXt recipe from the course, and how it was scaled to LFW-64"):
    st.table(convnext_table(recipes.get(CONVNEXT_RECIPE)))
    st.caption(train_notes.RANDAUGMENT_NOTE)
values: dict = dict(pk_batch) | joint
for group_name, group_items in train_form.GROUPS.items():
    render_group(group_name, group_items, values, fallback, info, model)
if (gpus := train_form.gpu_count()) > 1:
    values[train_form.GPUS_FIELD.name] = widget(train_form.gpus_field(gpus), st, fallback)
if values.get("channels_last") and (crash_note := channels_last_warning(spec)):
    st.warning(crash_note, icon=":material/warning:")
st.info(train_form.step_facts(facts["images"], values), icon=":material/calculate:")

# 5 - launch ------------------------------------------------------------------------------------------
st.subheader("5 · Launch")
default_name = f"{spec.get('name', 'model')}-{loss}"
name = st.text_input("Run name", value=default_name, max_chars=60)  # no key: a new loss, a new default
try:
    queue = jobs.JobQueue(runs_dir())
    active = [job for job in queue.list_jobs() if job.state in ("queued", "running")]
except ValueError as err:  # a read-only or full runs folder, or a bad FACELAB_MAX_JOBS
    show_error(f"The job queue cannot be used: {err}")
    st.stop()
scheduler.start_ticker(queue.runs_dir)
st.caption(f"{sum(job.state == 'running' for job in active)} running, {sum(job.state == 'queued' for job in active)} "
           f"waiting; at most {queue.max_running} at once. A new job waits its turn. "
           f"Launching as **{as_plain_markdown(user_name())}**.")
if st.button("Launch", type="primary", icon=":material/rocket_launch:", key="train.launch"):
    try:
        run = train_form.build_run(name, spec, data_root(), pipeline, loss, loss_params, values, init_from)
        job_id = queue.submit(run, user_name())
    except (ValueError, TypeError) as err:
        show_error(f"This run cannot start: {err}", train_form.launch_hint(err))
    else:
        queue.tick()
        st.success(f"Launched **{as_plain_markdown(run['name'])}** ({queue.get(job_id).state}). "
                   "Follow it on the Runs page.",
                   icon=":material/check_circle:")
        st.page_link("views/runs.py", label="Open Runs", icon=":material/monitoring:")
