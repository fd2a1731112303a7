"""balancers"""
