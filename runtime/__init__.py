"""mast.runtime"""
