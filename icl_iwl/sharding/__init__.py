"""Device meshes and logical-axis sharding rules (sharding as config data)."""
