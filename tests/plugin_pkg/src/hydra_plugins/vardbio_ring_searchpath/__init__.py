"""Adds this package's configs (campaign/ring_angle.yaml) to Hydra's search path, so
`vardbio run campaign=ring_angle` finds them beside vardbio's own."""
from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class VardbioRingSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="vardbio-ring", path="pkg://vardbio_ring.configs")
