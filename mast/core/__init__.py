"""mast.core"""
