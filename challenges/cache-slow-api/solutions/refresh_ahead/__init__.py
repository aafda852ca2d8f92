"""Redis entries refreshed in the background before they age past the bound; reads rarely wait."""
