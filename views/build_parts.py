"""Build page parts that need no page state: one widget per spec field, the FLOPs conventions,
and the second look at a model (its drawing, receptive fields, training memory, every preset's
budget verdict, the slides' two blocks side by side)."""
from __future__ import annotations

import streamlit as st

from lib.model import edit
from lib.model.blocks import BLOCK_TITLES
from lib.model.diagram import network_dot, stage_block_dot
from lib.model.memory import STATE_PER_WEIGHT, training_memory
from lib.model.profile import Profile
from lib.model.spec import ModelSpec
from lib.ui import build_extras, flops_table


def key(field: str) -> str:
    return f"build.{field}"


FORMATS = {"block": lambda block: BLOCK_TITLES[block],
           "kind": lambda kind: {"conv": "conv (ResNet)", "patchify": "patchify (ConvNeXt)"}[kind]}


def widget(container, name: str, info: edit.Field, **callback):
    """One widget for one spec field, bound to its session-state key (the value lives there)."""
    label, help_text, k = info.label, info.help or None, key(name)
    if info.kind == "choice":
        fmt = FORMATS.get(name.split(".")[-1], str)
        return container.selectbox(label, info.choices, key=k, help=help_text, format_func=fmt, **callback)
    if info.kind == "bool":
        return container.checkbox(label, key=k, help=help_text, **callback)
    cast = float if info.kind == "float" else int
    return container.number_input(label, cast(info.low), cast(info.high), step=cast(info.step), key=k, help=help_text)


@st.cache_data(show_spinner="Counting torchvision's ResNets ...")
def course_resnet_table(convention: str) -> list[dict]:
    """The course's table recounted, its numbers written out as the course writes them (1,814,073,344)."""
    return [{name: f"{value:,}" if isinstance(value, int) else f"{value:.2f}" if isinstance(value, float) else value
             for name, value in row.items()}
            for row in flops_table.resnet_table(convention)]


def flops_conventions() -> None:
    """The switch between the course's "FLOPs" and FaceLab's, and the course's ResNet table recounted
    (in a popover: a reference to open, not a wall of numbers)."""
    row = st.columns([3, 2], vertical_alignment="bottom")
    row[0].segmented_control("Count compute as", list(flops_table.CONVENTIONS), key=key("convention"),
                             default="facelab", format_func=flops_table.CONVENTIONS.get,
                             help="The MACs figure above, and the ResNet table, in either convention.")
    with row[1].popover("The course's ResNet table, recounted", icon=":material/table:", width="stretch"):
        st.markdown(flops_table.CONVENTION_NOTE)
        st.table(course_resnet_table(st.session_state.get(key("convention")) or "facelab"))
        st.caption(flops_table.TABLE_NOTE)


@st.cache_data(show_spinner=False, max_entries=64)
def _memory_rows(spec_json: str, batch: int, optimizer: str):
    return build_extras.memory_rows(training_memory(ModelSpec.from_json(spec_json), batch, optimizer))


@st.cache_data(show_spinner=False, max_entries=16)
def _receptive_rows(spec_json: str):
    return build_extras.receptive_rows(ModelSpec.from_json(spec_json))


@st.cache_data(show_spinner="Counting every preset ...", max_entries=8)
def _budget_table(budget: int):
    return build_extras.budget_table(budget)


@st.cache_data(show_spinner=False, max_entries=1)
def _slide_blocks():
    return build_extras.slide_blocks()


def second_look(result: Profile, stage_index: int, budget: int) -> None:
    """The model drawn, what each stage sees, what training a batch holds, and the presets' budget."""
    spec = result.spec
    drawing, fields, memory, presets, slides = st.tabs(
        ["Drawing", "What each stage sees", "Training memory", "Every preset vs the budget", "MobileNetV2 vs ConvNeXt"])
    with drawing:
        whole, block = st.columns([1, 1])
        whole.graphviz_chart(network_dot(result), width="stretch")
        if spec.stages:
            block.graphviz_chart(stage_block_dot(spec, min(stage_index, len(spec.stages) - 1)), width="stretch")
            block.caption("The stage picked under *Inside a block*, drawn from the module itself: each box is a "
                          "layer in the order it runs, (+) adds a skip connection back in.")
    with fields:
        st.dataframe(_receptive_rows(spec.to_json()), hide_index=True, width="stretch")
        st.markdown(build_extras.RECEPTIVE_NOTE)
    with memory:
        row = st.columns(2)
        batch = int(row[0].number_input("Batch size", 1, 4096, 64, key=key("memory_batch")))
        optimizer = row[1].selectbox("Optimizer", list(STATE_PER_WEIGHT), index=0, key=key("memory_optimizer"))
        st.dataframe(_memory_rows(spec.to_json(), batch, optimizer), hide_index=True, width="stretch")
        st.markdown(build_extras.MEMORY_NOTE)
    with presets:
        st.dataframe(_budget_table(budget), hide_index=True, width="stretch")
        st.markdown(build_extras.BUDGET_NOTE)
    with slides:
        left, right = st.columns(2)
        mobilenet, convnext = _slide_blocks()
        left.graphviz_chart(mobilenet, width="stretch")
        right.graphviz_chart(convnext, width="stretch")
        st.markdown(build_extras.SLIDE_NOTE)
