"""What every problem kind shares and nothing Prefect: the problem-kind interface, typed recipes,
method catalogues, plans and stores, calibration records, inputs, devices and prior training.

Kept free of Prefect so that a kind's code, and the tests of it, run without a flow; the Prefect
tasks in ``inversa.tasks`` wrap it.
"""
