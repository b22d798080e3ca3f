"""Build: assemble a CNN from blocks and watch its parameters, MACs and shapes change live."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import streamlit as st

from lib.data.datasets import list_identities
from lib.model import edit
from lib.model.codegen import to_source
from lib.model.presets import FACE_PRESETS, PRESETS
from lib.model.profile import human, profile, shape_text
from lib.model.spec import ModelSpec
from lib.model.warnings import channels_last_warning
from lib.ui import flops_table
from lib.ui.build_notes import BLOCK_NOTES, concept_notes, layernorm_advice
from lib.ui.build_view import (
    block_alternatives,
    budget_gauge,
    cost_chart,
    dataset_image_size,
    layer_formulas,
    layer_rows,
    parts_table,
    size_for_data,
)
from lib.ui.text import as_plain_markdown
from views.build_parts import flops_conventions, key, second_look, widget
from views.common import MODEL_SPEC_KEY, data_root, save_user_choices, show_error

DRAFT, VALID = "build.draft", "build.valid"  # the spec being edited; the last one that was possible
FOLLOWED = "build.classes_followed"  # the data set's identity count the Classes field last took
SIZE_FOLLOWED = "build.size_followed"  # the data set's image side the Input size field last took
NUMBERS = {name: st.column_config.NumberColumn(format="localized") for name in ("parameters", "MACs")}
ALTERNATIVE_COLUMNS = {  # short headers and rounded MACs: the table fits beside the stage editor
    "parameters": st.column_config.NumberColumn("params", format="localized"),
    "MACs": st.column_config.NumberColumn("MACs", format="compact", help="Multiply-accumulates per image"),
    "vs this stage": st.column_config.TextColumn("vs this", help="Parameters relative to this stage's own block"),
    "shortcut": st.column_config.TextColumn("shortcut", help="Whether the block adds its input back (item 6)")}


def draft() -> ModelSpec:
    return ModelSpec.from_dict(st.session_state[DRAFT])


def widget_values() -> dict:
    return {name: st.session_state[key(name)] for name in edit.to_fields(draft()) if key(name) in st.session_state}


def set_draft(spec: ModelSpec, overwrite: bool = True) -> None:
    """Store the draft and show it in the widgets (only where a widget has no value yet, unless overwrite)."""
    st.session_state[DRAFT] = spec.to_dict()
    for name, value in edit.to_fields(spec).items():
        if overwrite or key(name) not in st.session_state:
            st.session_state[key(name)] = value


@st.cache_data(ttl=30, show_spinner=False)
def identities(root: str) -> int:
    """Training identities of a data set (a folder listing; 0 when it cannot be read)."""
    return len(list_identities(Path(root) / "cls_data" / "train"))


@st.cache_data(ttl=30, show_spinner=False)
def image_side(root: str) -> int:
    """The side of the data set's images (one image header; 0 when none can be read)."""
    return dataset_image_size(root)


def load(spec: ModelSpec) -> None:
    """Show a preset or a blank model, its classifier and input sized to the data set in the sidebar."""
    root = str(data_root())
    set_draft(size_for_data(edit.classes_for_data(spec, identities(root)), image_side(root)))
    st.session_state[SIZE_FOLLOWED] = image_side(root)


def follow_image_size(side: int) -> None:
    """The Input size field follows the data set's images, unless the student typed another size."""
    followed = st.session_state.get(SIZE_FOLLOWED)
    if side and side != followed:
        if st.session_state.get(key("input_size")) == followed:
            st.session_state[key("input_size")] = side
        st.session_state[SIZE_FOLLOWED] = side


def follow_data_set(count: int) -> None:
    """The Classes field follows the data set in the sidebar, unless the student typed another number."""
    followed = st.session_state.get(FOLLOWED)
    if count and count != followed:
        if st.session_state.get(key("num_classes")) == followed:
            st.session_state[key("num_classes")] = count
        st.session_state[FOLLOWED] = count


def apply(operation, *args, drop: str = "") -> None:
    """Widget callback: fold the widgets into the draft, then apply one structural edit."""
    values = widget_values()
    values.pop(drop, None)
    set_draft(operation(edit.from_fields(draft(), values), *args))


def block_changed(index: int) -> None:
    name = f"stage{index}.block"
    apply(edit.change_block, index, st.session_state[key(name)], drop=name)


def stem_changed() -> None:
    apply(edit.change_stem_kind, st.session_state[key("stem.kind")], drop="stem.kind")


# -- state: the draft from the widgets, and the last valid model ---------------------------------
data_classes = identities(str(data_root()))
if DRAFT not in st.session_state:
    load(PRESETS["face_resnet"])
    st.session_state[FOLLOWED] = data_classes
set_draft(draft(), overwrite=False)  # widgets Streamlit forgot while another page was open
follow_data_set(data_classes)
data_side = image_side(str(data_root()))
follow_image_size(data_side)
spec = edit.from_fields(draft(), widget_values())
st.session_state[DRAFT] = spec.to_dict()
save_user_choices()  # the draft survives a browser refresh
error = None
try:
    result = profile(spec)
    st.session_state[VALID] = spec.to_dict()
except ValueError as err:
    error = str(err)
    result = profile(ModelSpec.from_dict(st.session_state.get(VALID, PRESETS["face_resnet"].to_dict())))
budget = int(st.session_state.get(key("budget_m"), 35.0) * 1e6)
if st.session_state.get(key("explain"), 0) not in range(len(result.stages)):  # a stage that is gone
    st.session_state[key("explain")] = 0
stage_index = st.session_state.get(key("explain"), 0)
notes = concept_notes(result, stage_index, budget)

# -- header and totals ----------------------------------------------------------------------------
st.title("Build a model")
st.caption("Start from a preset or a blank model and change it block by block: every number is recounted as you edit.")
top = st.columns([2.2, 0.8, 0.8, 1.2, 1.2, 1.2], vertical_alignment="bottom")
top[0].selectbox("Start from", list(PRESETS), index=list(PRESETS).index("face_resnet"), key=key("preset"),
                 format_func=lambda n: f"{n} ({'64x64 faces' if n in FACE_PRESETS else 'ImageNet 224x224'})")
top[1].button("Load", on_click=lambda: load(PRESETS[st.session_state[key("preset")]]), width="stretch")
top[2].button("Blank", on_click=lambda: load(edit.blank_spec()), width="stretch")
widget(top[3], "input_size", edit.MODEL_FIELDS["input_size"])
widget(top[4], "num_classes", replace(edit.MODEL_FIELDS["num_classes"], help=(
    f"Identities the classifier tells apart: by default the {data_classes} of the data set in the sidebar "
    f"({as_plain_markdown(data_root().name)}); ImageNet presets keep 1000. Train always sizes the classifier to "
    "the data set it trains on, whatever this field says.")))
top[5].number_input("Budget (M parameters)", 0.1, 10_000.0, 35.0, step=1.0, key=key("budget_m"))
if data_classes and spec.num_classes != data_classes:
    st.caption(f":material/info: Train will size the classifier to the {data_classes} identities of "
               f"{as_plain_markdown(data_root().name)}, not to {spec.num_classes:,}: the counts below are for "
               f"{spec.num_classes:,}.")

if norm_advice := layernorm_advice(spec):
    st.caption(norm_advice)
if data_side and spec.input_size != data_side:
    st.caption(f":material/info: The images of {as_plain_markdown(data_root().name)} are {data_side}x{data_side}: "
               f"the counts below are for {spec.input_size}x{spec.input_size} inputs.")
if error:
    field = edit.error_field(error)
    show_error(f"This model is impossible: {error}",
               f"change **{edit.field_label(field) if field else 'the field named above'}** as the message says. "
               "Everything below still shows the last possible model.")
elif crash_note := channels_last_warning(result.spec):
    st.warning(crash_note, icon=":material/warning:")
totals = st.columns([1.1, 1, 1, 1.3])
totals[0].metric("Parameters", f"{result.params:,}", help="Learned weights and biases (BatchNorm buffers excluded).")
totals[0].caption(f"model: {result.spec.name}")
convention = st.session_state.get(key("convention")) or "facelab"
compute_label, compute_value, compute_caption = flops_table.compute_label(convention, result.macs)
totals[1].metric(compute_label, compute_value, help=f"{result.macs:,} multiply-accumulates of conv and "
                 "linear layers for one image.")
totals[1].caption(compute_caption)
totals[2].metric("Activation memory", human(result.activation_bytes, "B"),
                 help="float32 values the layers write for one image in a forward pass; training keeps about "
                      "this much per image of the batch for the backward pass.")
totals[2].caption("per image, float32")
totals[3].caption(f"Parameters against the budget (black line: {budget / 1e6:g}M)")
totals[3].plotly_chart(budget_gauge(result.params, budget), width="stretch", config={"displayModeBar": False})
st.markdown(notes[13])
flops_conventions()

st.dataframe(parts_table(result), hide_index=True, width="stretch", column_config=NUMBERS)  # full width: 8 columns
note_col, chart_col = st.columns([1.2, 1], gap="medium", vertical_alignment="center")
note_col.markdown(notes[9])
chart_col.plotly_chart(cost_chart(result), width="stretch", config={"displayModeBar": False})


STAGE_BUTTONS = (  # (key, icon, edit, offset or None, help): small icon buttons in each stage's header
    ("up", ":material/arrow_upward:", edit.move_stage, -1, "Move this stage up (before the previous one)"),
    ("down", ":material/arrow_downward:", edit.move_stage, 1, "Move this stage down (after the next one)"),
    ("remove", ":material/delete:", edit.remove_stage, None, "Remove this stage; the next one takes its input"))


def stage_editor(index: int, stage) -> None:
    """One stage in a bordered box: its name with icon buttons, its output, then its fields three to
    a row (the block alone on the first, where its full name fits)."""
    with st.container(border=True):
        head = st.columns([1, 2], vertical_alignment="center")  # the three buttons fit on one line
        head[0].markdown(f"**Stage {index + 1}**")
        buttons = head[1].container(horizontal=True, horizontal_alignment="right", gap="xsmall")
        last = len(spec.stages) - 1
        for name, icon, operation, offset, tip in STAGE_BUTTONS:
            args = (index,) if offset is None else (index, offset)
            off = offset == -1 and index == 0 or offset == 1 and index == last
            buttons.button("", icon=icon, key=key(f"{name}{index}"), on_click=apply, args=(operation, *args),
                           disabled=off, help=tip)
        shown = result.stages[index] if not error and index < len(result.stages) else None
        if shown:
            st.caption(f"Output {shape_text(shown.out_shape)} · {shown.params:,} parameters")
        widget(st, f"stage{index}.block", edit.STAGE_FIELDS["block"], on_change=block_changed, args=(index,))
        rest = [name for name in edit.stage_fields(stage) if name != "block"]
        cols = [col for start in range(0, len(rest), 3) for col in st.columns(3)]
        for position, name in enumerate(rest):
            widget(cols[position], f"stage{index}.{name}", edit.STAGE_FIELDS[name])
        if error and edit.error_field(error).startswith(f"stages[{index}]"):
            st.error(f"**{edit.field_label(edit.error_field(error))}**: {error.split(': ', 1)[-1]}")


left, right = st.columns([1, 1.4], gap="medium")
with left:
    st.subheader("Stem")
    stem_cols = st.columns([2, 1]) + st.columns(3)
    widget(stem_cols[0], "stem.kind", edit.MODEL_FIELDS["stem.kind"], on_change=stem_changed)
    widget(stem_cols[1], "stem.out_chs", edit.MODEL_FIELDS["stem.out_chs"])
    patchify = st.session_state[key("stem.kind")] == "patchify"
    widget(stem_cols[2], "stem.kernel_size", edit.Field("Patch size" if patchify else "Kernel", "int", 1, 15))
    if not patchify:
        widget(stem_cols[3], "stem.stride", edit.MODEL_FIELDS["stem.stride"])
        widget(st, "stem.pool", edit.MODEL_FIELDS["stem.pool"])
    st.subheader("Stages")
    for index, stage in enumerate(spec.stages):
        stage_editor(index, stage)
    st.button("Add a stage", on_click=apply, args=(edit.add_stage,), icon=":material/add:",
              help="Appends a stage like the last one that halves the size and doubles the width.")
    st.subheader("Head")
    head_cols = st.columns(3)
    for position, name in enumerate(("head.conv_chs", "head.embedding_dim", "head.dropout")):
        widget(head_cols[position], name, edit.MODEL_FIELDS[name])
    st.caption("After the last stage: global average pooling, the optional embedding (linear + BatchNorm: the face "
               "descriptor verification compares), dropout, and a linear classifier over the identities.")

with right:
    st.subheader("Inside a block")
    if result.stages:
        st.selectbox("Stage to explain", range(len(result.stages)), key=key("explain"),
                     format_func=lambda i: f"Stage {i + 1}")  # a label that stays put while blocks change
        explained = result.stages[stage_index]
        path, story = BLOCK_NOTES[explained.spec.block]
        st.markdown(f"`{path}`\n\n{story}")
        st.caption(f"Its first block, {shape_text(explained.in_shape)} -> {shape_text(explained.blocks[0].out_shape)}: "
                   f"each layer's parameters ({layer_formulas(explained.blocks[0])}; M in, N out channels, K kernel, "
                   "C channels, g groups) and MACs (weights x output positions, rounded).")
        st.dataframe(layer_rows(explained.blocks[0]), hide_index=True, width="stretch", height="content")
        for item in (1, 2, 3):
            st.markdown(notes[item])
        st.markdown("**The same position built from other blocks** (same widths and stride):")
        st.dataframe(block_alternatives(explained.spec, explained.in_shape), hide_index=True, width="stretch",
                     column_config=ALTERNATIVE_COLUMNS)
        with st.expander("What each block is (items 3-8)"):
            for _, text in BLOCK_NOTES.values():
                st.markdown(text)
    for item in (6, 10, 11, 12):
        st.markdown(notes[item])

second_look(result, stage_index, budget)

st.subheader("Use this model")
valid = result.spec
out = st.columns(3)
out[0].download_button("Download spec (JSON)", valid.to_json(), f"{edit.file_stem(valid)}.json",
                       "application/json", disabled=bool(error), icon=":material/download:")
source = to_source(valid)
out[1].download_button("Download PyTorch code", source, f"{edit.file_stem(valid)}.py", "text/x-python",
                       disabled=bool(error), icon=":material/code:")
out[2].button("Use this model for training", type="primary", disabled=bool(error), icon=":material/school:",
              on_click=lambda: st.session_state.__setitem__(MODEL_SPEC_KEY, valid.to_dict()))
if st.session_state.get(MODEL_SPEC_KEY) == valid.to_dict():
    st.success(f"The Train page will use this model ({valid.name}, {result.params:,} parameters).")
with st.expander("Generated PyTorch code (standalone: needs torch, and torchvision for DropBlock; loads FaceLab's "
                 "weights)"):
    st.code(source, language="python", wrap_lines=True)
