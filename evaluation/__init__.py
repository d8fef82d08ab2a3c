"""mast.evaluation"""
