"""mast.training"""
