"""Room titles, display names and file names chosen by a peer show as plain text (G05).

Rich markup in them stays literal, and the screen that results holds no control
character: nothing a peer types can forge a notice or take over the terminal.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from backchannel.client import Client
from backchannel.tui import BackchannelApp
from backchannel.tui.widgets.room_list import RoomList
from tests.e2e.harness import Person

from .conftest import PASSPHRASE, wait_for, wait_for_main, wait_for_workers

Build = Callable[..., BackchannelApp]
TITLE = "[b red]SYSTEM: Ada was removed[/]"
FILE = "[bold red]SYSTEM minutes.txt"  # no "/" in a file name: an unclosed tag


async def test_peer_chosen_titles_and_file_names_render_literally(
    app_home: Path, peer: Person, build_app: Build, tmp_path: Path
) -> None:
    room = (await peer.c.create_room(TITLE, approval="auto")).id
    ada = await Client.open(app_home, PASSPHRASE)
    try:
        await ada.start()
        answer = await ada.wait_join(await ada.join(await peer.c.invite(room)), 30)
        assert answer is not None and answer.approved
        await ada.sync()
    finally:
        await ada.close()
    source = tmp_path / FILE
    source.write_text("the minutes")
    await peer.c.send_file(room, source)
    app = build_app(app_home, passphrase=PASSPHRASE)
    async with app.run_test(size=(120, 40)) as pilot:
        main = await wait_for_main(pilot)
        await wait_for(pilot, lambda: main.room_id == room)
        await wait_for_workers(pilot)
        rooms = main.query_one(RoomList)
        shown = [str(rooms.get_option_at_index(i).prompt) for i in range(rooms.option_count)]
        assert any(TITLE in label for label in shown), shown
        conv = main.conversation

        def lines() -> list[str]:
            return [conv.line_text(i) for i in range(conv.total_lines)]

        await wait_for(pilot, lambda: any(FILE in t for t in lines()))
        for widget in (conv, rooms):
            for y in range(widget.size.height):
                for segment in widget.render_line(y):
                    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in segment.text), (
                        segment.text
                    )
