"""mast.plugins"""
