"""Commands that list what the tool knows: model aliases, families, tensor groups."""

from typing import Annotated

import typer

from solarforensics.cli.app import app, families_app, out


@app.command()
def models() -> None:
    """The model aliases (built in, plus your own file: see the README)."""
    from solarforensics.families.aliases import load_aliases, user_models_path
    from solarforensics.render.listing import print_table

    rows = [[a.name, a.repo, a.revision, a.model_type, a.description] for a in load_aliases().values()]
    print_table(out, "Model aliases", ["alias", "repo", "revision", "model_type", "description"], rows,
                caption=f"your own aliases: {user_models_path()}")


@families_app.command("list")
def families_list() -> None:
    """Every model family (one TOML file each) and the model types it covers."""
    from solarforensics.families.family import list_families
    from solarforensics.render.listing import print_table

    rows = [[f.name, ", ".join((f.model_type, *f.aliases)), f.description] for f in list_families()]
    print_table(out, "Families", ["family", "model types", "description"], rows)


@families_app.command("show")
def families_show(name: Annotated[str, typer.Argument(help="Family or model_type, e.g. glm4_moe.")]) -> None:
    """A family's tensor-name templates and config keys, as JSON."""
    from solarforensics.families.family import load_family
    from solarforensics.render.listing import print_json

    print_json(out, load_family(name).to_dict())


@app.command()
def groups() -> None:
    """The tensor groups `--tensors` accepts (glob patterns on tensor names work too)."""
    from solarforensics.families.selection import GROUPS
    from solarforensics.render.listing import print_table

    print_table(out, "Tensor groups", ["group", "roles", "what"], [[g, ", ".join(r), d] for g, (r, d) in GROUPS.items()])
