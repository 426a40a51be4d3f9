"""What a point file's coordinates are: RAS or LPS world mm, or voxel indices (import-light, for CLI options)."""

SPACES = ("ras", "lps", "voxel")
