"""Reading the connector's answers (pure): line names, register refusals, the tile's colour."""

from __future__ import annotations

from thoth_pbx.features.messaging.connector import line_name, register_error, register_params, state_of


def test_line_name_is_thoth_and_the_digits() -> None:
    assert line_name("+14155550123") == "THOTH_14155550123"
    assert line_name("+7 (999) 000-00-01") == "THOTH_79990000001"


def test_register_answers_errors_with_result_false() -> None:
    assert register_error({"result": True}) is None
    assert register_error({"result": False, "error": "ICON_REQUIRED", "error_description": "no icon"}) == (
        "ICON_REQUIRED: no icon"
    )
    params = register_params("https://thoth.example.com/")
    assert (
        params["ID"] == "thoth_whatsapp"
        and params["PLACEMENT_HANDLER"] == "https://thoth.example.com/api/bitrix/connector"
    )
    assert params["ICON"]["DATA_IMAGE"].startswith("data:image/svg+xml")


def test_status_to_colour() -> None:
    assert state_of({"LINE": 3, "CONNECTOR": "thoth_whatsapp", "ERROR": False, "CONFIGURED": True, "STATUS": True}) == (
        "green",
        None,
    )
    assert state_of({"ERROR": False, "CONFIGURED": True, "STATUS": False})[0] == "yellow"
    assert state_of({"ERROR": True, "CONFIGURED": True, "STATUS": True})[0] == "red"
    assert state_of({"ERROR": False, "CONFIGURED": False, "STATUS": False})[0] == "red"
    assert state_of(None)[0] == "red"


def test_names_bitrix_accepts() -> None:
    from thoth_pbx.features.messaging.inbound_render import clean_name

    assert clean_name("Anna-Maria O'Neil 2024 🎉") == "Anna-Maria O'Neil"
    assert clean_name("Иван Петров") == "Иван Петров"  # letters of any script
    assert clean_name("🎉🎉") == "WhatsApp" and clean_name(None) == "WhatsApp"
    assert len(clean_name("A" * 40)) == 25
