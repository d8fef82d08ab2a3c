"""mast.export"""
