"""A user session without a browser: Streamlit's own websocket protocol.

A classroom is many browser tabs talking to one server. Rendering twenty
Chromium tabs on a small machine costs more than the app itself, so the load
test speaks the protocol the browser speaks: it opens ``/_stcore/stream``,
asks for script runs, reads the elements the server sends back (the same
protobuf messages the browser renders) and sends widget values the way the
browser does. The server cannot tell the difference: every session is a real
session of the real app, with its own session state.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState
from websockets.sync.client import connect

# Widget kinds and the WidgetState field that carries each one's value.
VALUE_FIELDS = {
    "text_input": "string_value",
    "text_area": "string_value",
    "selectbox": "string_value",
    "radio": "string_value",
    "checkbox": "bool_value",
    "toggle": "bool_value",
    "number_input": "double_value",
    "slider": "double_array_value",
    "multiselect": "string_array_value",
}
BUTTON_KINDS = ("button",)


@dataclass
class Element:
    """One element the server sent in the last run: its kind and its proto."""

    kind: str
    proto: object

    @property
    def label(self) -> str:
        return getattr(self.proto, "label", "") or ""

    @property
    def text(self) -> str:
        """What a user reads on it (markdown body, alert text, exception message)."""
        for name in ("body", "message", "label", "value"):
            value = getattr(self.proto, name, None)
            if isinstance(value, str) and value:
                return value
        return ""


@dataclass
class RunResult:
    elements: list[Element] = field(default_factory=list)
    status: str = ""
    seconds: float = 0.0

    def find(self, kind: str, label: str) -> Element:
        for element in self.elements:
            if element.kind == kind and element.label.startswith(label):
                return element
        found = [f"{e.kind}:{e.label!r}" for e in self.elements if e.label]
        raise LookupError(f"no {kind} labelled {label!r}; the page shows {found} and problems {self.problems()}")

    def tables(self) -> list:
        """Every st.dataframe of the run as a pyarrow Table (the bytes the browser decodes)."""
        import pyarrow as pa

        return [pa.ipc.open_stream(e.proto.arrow_data.data).read_all() for e in self.elements
                if e.kind in ("dataframe", "table") and e.proto.arrow_data.data]

    def texts(self, kind: str | None = None) -> list[str]:
        return [e.text for e in self.elements if kind is None or e.kind == kind]

    def problems(self) -> list[str]:
        """Exceptions and error alerts: what the browser test fails on too."""
        found = [f"exception: {e.proto.type}: {e.proto.message}" for e in self.elements if e.kind == "exception"]
        found += [f"error: {e.proto.body}" for e in self.elements
                  if e.kind == "alert" and e.proto.format == e.proto.ERROR]
        return found


class StreamSession:
    """One user at ``base_url`` (``http://127.0.0.1:PORT``): run pages, set widgets, press buttons."""

    def __init__(self, base_url: str, timeout: float = 60.0):
        self.ws_url = base_url.replace("http://", "ws://").rstrip("/") + "/_stcore/stream"
        self.timeout = timeout
        self.pages: dict[str, str] = {}  # url path -> page script hash
        self.page_hash = ""
        self.widgets: dict[str, WidgetState] = {}
        self.last = RunResult()
        self._socket = None

    def __enter__(self) -> "StreamSession":
        self._socket = connect(self.ws_url, subprotocols=["streamlit"], open_timeout=self.timeout,
                               max_size=None)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def open(self, url_path: str = "") -> RunResult:
        """Run the page at ``url_path`` ("" is the default page), like clicking it in the sidebar."""
        if url_path and url_path not in self.pages:
            raise LookupError(f"no page {url_path!r}; the app has {sorted(self.pages)}")
        self.page_hash = self.pages.get(url_path, "")
        return self._rerun(url_path)

    def set(self, kind: str, label: str, value) -> RunResult:
        """Give a widget a value (as the user would) and rerun the page."""
        return self.change({(kind, label): value})

    def click(self, label: str) -> RunResult:
        return self.change(click=label)

    def change(self, values: dict | None = None, click: str | None = None) -> RunResult:
        """Several widget values, and optionally a button press, in one rerun: what a user
        does in a few seconds, sent at once (each (kind, label) is found on the last run)."""
        for (kind, label), value in (values or {}).items():
            state = WidgetState(id=self.last.find(kind, label).proto.id)
            value_field = VALUE_FIELDS[kind]
            if value_field.endswith("array_value"):
                getattr(state, value_field).data.extend(value)
            else:
                setattr(state, value_field, value)
            self.widgets[state.id] = state
        extra = [WidgetState(id=self.last.find("button", click).proto.id, trigger_value=True)] if click else []
        return self._rerun(extra=extra)

    def _rerun(self, page_name: str | None = None, extra: list[WidgetState] = ()) -> RunResult:
        message = BackMsg()
        client = message.rerun_script
        client.page_script_hash = self.page_hash
        if page_name is not None:
            client.page_name = page_name
        client.widget_states.widgets.extend(list(self.widgets.values()) + list(extra))
        started = time.monotonic()
        self._socket.send(message.SerializeToString())
        self.last = self._collect(started)
        return self.last

    def _collect(self, started: float) -> RunResult:
        result = RunResult()
        while True:
            left = self.timeout - (time.monotonic() - started)
            if left <= 0:
                raise TimeoutError(f"the app did not finish a run within {self.timeout:.0f} s")
            message = ForwardMsg()
            message.ParseFromString(self._socket.recv(timeout=left))
            kind = message.WhichOneof("type")
            if kind == "delta" and message.delta.WhichOneof("type") == "new_element":
                element = message.delta.new_element
                element_kind = element.WhichOneof("type")
                result.elements.append(Element(element_kind, getattr(element, element_kind)))
            elif kind == "navigation":
                self._learn_pages(message.navigation.app_pages)
            elif kind == "new_session":
                self._learn_pages(message.new_session.app_pages)
            elif kind == "script_finished":
                status = ForwardMsg.ScriptFinishedStatus.Name(message.script_finished)
                if status == "FINISHED_EARLY_FOR_RERUN":
                    result = RunResult()  # a newer run replaces this one
                    continue
                result.status, result.seconds = status, time.monotonic() - started
                return result

    def _learn_pages(self, app_pages) -> None:
        for page in app_pages:
            self.pages[page.url_pathname] = page.page_script_hash
            if page.is_default:
                self.pages.setdefault("", page.page_script_hash)
