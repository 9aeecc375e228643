"""A dataset's SQL text made fit to be wrapped (config/querytext.py): only what follows the
query's last token is cut (comments, semicolons, a BOM before it), whatever quoting or comment
style the text uses."""

from __future__ import annotations

from syncd.config import clean_query

ODD_ENDINGS = {
    "comentario": "SELECT id, tipo FROM eventos -- the end, no newline",
    "ponto_e_virgula_comentario": "SELECT id, tipo FROM eventos; -- fim\n\n",
    "bom": "\ufeffSELECT id, tipo FROM eventos;\n",
    "bloco": "SELECT id, tipo FROM eventos /* a /* nested */ block */ ;\n/* fim */",
    "texto_com_tracos": "SELECT id, tipo || ' -- ; /* ' AS tipo FROM eventos -- c\n;\n-- fim",
    "dolar": "SELECT id, $x$ -- ; $x$ || tipo || $$;--$$ AS tipo FROM eventos;;  -- fim",
    "escape": "SELECT id, E'\\\\' || tipo || E'\\' -- ' AS tipo FROM eventos -- fim",
}


def test_clean_query_cuts_only_what_follows_the_last_token():
    assert clean_query(ODD_ENDINGS["comentario"]) == "SELECT id, tipo FROM eventos"
    assert clean_query(ODD_ENDINGS["bom"]) == "SELECT id, tipo FROM eventos"
    assert clean_query(ODD_ENDINGS["bloco"]) == "SELECT id, tipo FROM eventos"
    assert clean_query("SELECT 1 /* a */ AS um /* b */") == "SELECT 1 /* a */ AS um"
    assert clean_query(ODD_ENDINGS["dolar"]).endswith("FROM eventos")
    assert clean_query(ODD_ENDINGS["escape"]).endswith("FROM eventos")
    assert clean_query("SELECT 1; SELECT 2;") == "SELECT 1; SELECT 2"  # the server refuses it
    assert clean_query("SELECT 'unterminated -- x") == "SELECT 'unterminated -- x"
    assert clean_query("-- only a comment\n;") == ""
